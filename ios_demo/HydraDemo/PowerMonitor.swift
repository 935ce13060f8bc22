import Foundation
import HydraPolicy
import UIKit

/// UIDevice battery monitoring, ProcessInfo low-power mode and thermal state -> the policy's input.
@MainActor
final class PowerMonitor {
    init() {
        UIDevice.current.isBatteryMonitoringEnabled = true
    }

    func read(budgetMs: Double? = nil) -> PolicyInput {
        let device = UIDevice.current
        let info = ProcessInfo.processInfo
        return PolicyInput(
            battery: IOSPower.batteryPercent(level: device.batteryLevel),
            charging: IOSPower.onPower(batteryStateRaw: device.batteryState.rawValue),
            lowPower: info.isLowPowerModeEnabled,
            thermal: IOSPower.thermalState(rawValue: info.thermalState.rawValue),
            budgetMs: budgetMs
        )
    }
}

package org.hydravit.edge.demo

import android.content.Context
import android.content.Intent
import android.content.IntentFilter
import android.os.BatteryManager
import android.os.Build
import android.os.PowerManager
import org.hydravit.edge.policy.AndroidPower
import org.hydravit.edge.policy.PolicyInput

/** Battery level, charging, power-save mode and thermal status -> the policy's input. */
class PowerReader(private val context: Context) {
    private val powerManager = context.getSystemService(PowerManager::class.java)

    fun read(budgetMs: Double? = null): PolicyInput {
        // ACTION_BATTERY_CHANGED is sticky: registering no receiver returns the last value.
        val battery: Intent? = context.registerReceiver(null, IntentFilter(Intent.ACTION_BATTERY_CHANGED))
        val level = battery?.getIntExtra(BatteryManager.EXTRA_LEVEL, -1) ?: -1
        val scale = battery?.getIntExtra(BatteryManager.EXTRA_SCALE, -1) ?: -1
        val status = battery?.getIntExtra(BatteryManager.EXTRA_STATUS, -1) ?: -1
        val plugged = battery?.getIntExtra(BatteryManager.EXTRA_PLUGGED, 0) ?: 0
        val thermal = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.Q) powerManager.currentThermalStatus else null
        return PolicyInput(
            battery = AndroidPower.batteryPercent(level, scale),
            charging = AndroidPower.onPower(status, plugged),
            lowPower = powerManager.isPowerSaveMode,
            thermal = AndroidPower.thermalState(thermal),
            budgetMs = budgetMs,
        )
    }
}

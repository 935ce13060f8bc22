import Foundation

// UIKit/Core ML-free pieces of the demo app: power-state mapping, image preprocessing, top-k and
// choosing the latency table for this device. The app passes raw platform values in; XCTest covers these.

public enum IOSPower {
    /// UIDevice.batteryLevel (0...1, -1 when unknown or monitoring is off) -> percent or nil.
    public static func batteryPercent(level: Float) -> Double? {
        level < 0 ? nil : min(100, max(0, Double(level) * 100))
    }

    /// UIDevice.BatteryState raw value (0 unknown, 1 unplugged, 2 charging, 3 full) -> on external power.
    public static func onPower(batteryStateRaw: Int) -> Bool { batteryStateRaw == 2 || batteryStateRaw == 3 }

    /// ProcessInfo.ThermalState raw value (0 nominal, 1 fair, 2 serious, 3 critical) -> the policy's state.
    public static func thermalState(rawValue: Int) -> String? {
        (0..<thermalStates.count).contains(rawValue) ? thermalStates[rawValue] : nil
    }
}

public enum Imaging {
    /// RGBA bytes (row-major, size x size) -> normalised float32 NCHW (1 x 3 x size x size).
    public static func chw(rgba: [UInt8], size: Int, mean: [Float], std: [Float]) -> [Float] {
        precondition(rgba.count == size * size * 4, "expected \(size * size * 4) bytes")
        let plane = size * size
        var out = [Float](repeating: 0, count: 3 * plane)
        for i in 0..<plane {
            for c in 0..<3 {
                out[c * plane + i] = (Float(rgba[4 * i + c]) / 255 - mean[c]) / std[c]
            }
        }
        return out
    }

    /// Indices and softmax probabilities of the `n` largest logits, best first.
    public static func topK(_ logits: [Float], _ n: Int) -> [(Int, Float)] {
        guard let maxLogit = logits.max() else { return [] }
        let exp = logits.map { Foundation.exp(Double($0 - maxLogit)) }
        let sum = exp.reduce(0, +)
        return logits.indices.sorted { logits[$0] > logits[$1] }.prefix(n).map { ($0, Float(exp[$0] / sum)) }
    }
}

public enum Tables {
    public struct Choice {
        public let device: LutDevice
        public let source: String
        public let fallback: Bool
    }

    /// The LUT's entry for this device and backend; else one built from the app's own last
    /// benchmark report (with the LUT's policy); else the LUT's first entry of the backend.
    public static func choose(lut: Lut, deviceName: String, backend: String, ownReport: [String: Any]? = nil) throws -> Choice {
        if let d = try? lut.device(named: deviceName, backend: backend) {
            return Choice(device: d, source: "lut.json entry '\(deviceName)'", fallback: false)
        }
        if let report = ownReport, let entry = entryFromReport(report, backend: backend) {
            return Choice(device: try LutDevice(entry: entry, policy: lut.policy), source: "this device's last benchmark report", fallback: false)
        }
        let other = lut.devices.first { $0["backend"] as? String == backend } ?? lut.devices[0]
        let name = other["name"] as? String ?? ""
        return Choice(device: try lut.device(named: name, backend: other["backend"] as? String),
                      source: "lut.json entry '\(name)' (this device is not in the LUT)", fallback: true)
    }

    /// A LUT device entry (p90 rows, one per k and precision, with top-1 where measured) from a report's rows of `backend`; nil when it has none.
    public static func entryFromReport(_ report: [String: Any], backend: String) -> [String: Any]? {
        guard let rows = report["rows"] as? [[String: Any]], let device = report["device"] as? [String: Any] else { return nil }
        var seen = Set<OptionRef>()
        var out: [[String: Any]] = []
        for r in rows where r["backend"] as? String == backend {
            let precision = r["precision"] as? String ?? "fp32"
            guard let k = jsonNumber(r["k"]), let p90 = jsonNumber(r["latency_p90_ms"]),
                  seen.insert(OptionRef(k: Int(k), precision: precision)).inserted else { continue }
            var row: [String: Any] = ["k": Int(k), "precision": precision, "p90_ms": p90, "latency_basis": "p90"]
            if let acc = r["accuracy"] as? [String: Any], let top1 = jsonNumber(acc["top1"]) { row["top1"] = top1 }
            out.append(row)
        }
        if out.isEmpty { return nil }
        return ["name": device["name"] as? String ?? "this device", "source": "measured", "backend": backend, "rows": out]
    }
}

import Foundation

// Benchmark reports in the harness's schema (bench/schemas/report.schema.json, version 1),
// written by the app's benchmark mode to Documents and read by `hydravit-edge bench import`.
// Nullable fields are written as JSON null (NSNull), never dropped.

public let reportSchemaVersion = 1

public enum Stats {
    /// q-th percentile (0..100), linear interpolation between order statistics (numpy's default method, "linear", as bench/stats.py uses).
    public static func percentile(_ values: [Double], _ q: Double) -> Double {
        precondition(!values.isEmpty && q >= 0 && q <= 100)
        let a = values.sorted()
        let pos = Double(a.count - 1) * q / 100
        let lo = Int(pos.rounded(.down))
        let hi = min(lo + 1, a.count - 1)
        return a[lo] + (a[hi] - a[lo]) * (pos - Double(lo))
    }
}

public struct LatencyStats: Equatable {
    public let medianMs: Double
    public let p90Ms: Double
    public let minMs: Double
    public let runs: Int

    public init(samplesMs: [Double]) {
        medianMs = Stats.percentile(samplesMs, 50)
        p90Ms = Stats.percentile(samplesMs, 90)
        minMs = samplesMs.min()!
        runs = samplesMs.count
    }
}

private func orNull(_ value: Any?) -> Any { value ?? NSNull() }

private func round4(_ x: Double) -> Double { (x * 10000).rounded() / 10000 }

/// The report's `device` section; platform "ios" for the app.
public struct DeviceInfo {
    public var name: String
    public var platform: String = "ios"
    public var manufacturer: String? = "Apple"
    public var model: String?
    public var os: String?
    public var cpu: String?
    public var cpuCores: Int?
    public var gpu: String?
    public var memoryMb: Double?
    public var runtimes: [String: String] = [:]

    public init(name: String, model: String? = nil, os: String? = nil, cpu: String? = nil, cpuCores: Int? = nil,
                memoryMb: Double? = nil, runtimes: [String: String] = [:]) {
        self.name = name
        self.model = model
        self.os = os
        self.cpu = cpu
        self.cpuCores = cpuCores
        self.memoryMb = memoryMb
        self.runtimes = runtimes
    }

    public var json: [String: Any] {
        ["name": name, "platform": platform, "manufacturer": orNull(manufacturer), "model": orNull(model),
         "os": orNull(os), "cpu": orNull(cpu), "cpu_cores": orNull(cpuCores), "gpu": orNull(gpu),
         "memory_mb": orNull(memoryMb), "runtimes": runtimes]
    }
}

/// One k on one runtime configuration.
public struct ReportRow {
    public var k: Int
    public var backend: String
    public var artifact: String
    public var target: String?
    public var mode: String?
    public var entry: String?
    public var compute: String?
    public var precision: String? = "fp32"
    public var latency: LatencyStats?
    public var loadMs: Double?
    public var switchMs: Double?
    public var peakRssMb: Double?
    public var fileBytes: Int?
    public var notes: [String] = []

    public init(k: Int, backend: String, artifact: String, target: String? = nil, mode: String? = nil,
                entry: String? = nil, compute: String? = nil, precision: String? = "fp32", latency: LatencyStats?,
                loadMs: Double? = nil, switchMs: Double? = nil, peakRssMb: Double? = nil, fileBytes: Int? = nil,
                notes: [String] = []) {
        self.k = k
        self.precision = precision
        self.backend = backend
        self.artifact = artifact
        self.target = target
        self.mode = mode
        self.entry = entry
        self.compute = compute
        self.latency = latency
        self.loadMs = loadMs
        self.switchMs = switchMs
        self.peakRssMb = peakRssMb
        self.fileBytes = fileBytes
        self.notes = notes
    }

    public var json: [String: Any] {
        ["k": k, "backend": backend, "target": orNull(target), "mode": orNull(mode), "artifact": artifact,
         "entry": orNull(entry), "compute": orNull(compute), "precision": orNull(precision), "threads": NSNull(),
         "runs": orNull(latency?.runs), "latency_median_ms": orNull(latency.map { round4($0.medianMs) }),
         "latency_p90_ms": orNull(latency.map { round4($0.p90Ms) }), "latency_min_ms": orNull(latency.map { round4($0.minMs) }),
         "throughput_batch": NSNull(), "throughput_per_s": NSNull(), "load_ms": orNull(loadMs.map(round4)),
         "switch_ms": orNull(switchMs.map { round4(max(0, $0)) }), "peak_rss_mb": orNull(peakRssMb),
         "file_bytes": orNull(fileBytes), "params": NSNull(), "macs": NSNull(), "paper_ram_mb": NSNull(), "notes": notes]
    }
}

public final class ReportBuilder {
    public let device: DeviceInfo
    public let manifestSha256: String?
    public let toolName: String
    public let toolVersion: String
    public let settings: [String: Any]
    public let model: [String: Any]?
    public private(set) var rows: [ReportRow] = []

    public init(device: DeviceInfo, manifestSha256: String?, toolName: String, toolVersion: String,
                settings: [String: Any] = [:], model: [String: Any]? = nil) {
        self.device = device
        self.manifestSha256 = manifestSha256
        self.toolName = toolName
        self.toolVersion = toolVersion
        self.settings = settings
        self.model = model
    }

    /// Adds `row`, replacing a row with the same k and configuration.
    public func add(_ row: ReportRow) {
        rows.removeAll { $0.k == row.k && $0.backend == row.backend && $0.mode == row.mode && $0.compute == row.compute && $0.precision == row.precision }
        rows.append(row)
    }

    public func json(created: Date = Date()) -> [String: Any] {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'"
        var out: [String: Any] = [
            "schema_version": reportSchemaVersion, "source": "measured", "created": f.string(from: created),
            "tool": ["name": toolName, "version": toolVersion], "manifest_sha256": orNull(manifestSha256),
            "device": device.json, "settings": settings,
            "rows": rows.sorted { ($0.backend, $0.k) < ($1.backend, $1.k) }.map { $0.json },
        ]
        if let model = model { out["model"] = model }
        return out
    }

    /// Pretty JSON written atomically (a temporary file, then a rename).
    @discardableResult
    public func write(to url: URL, created: Date = Date()) throws -> URL {
        let data = try JSONSerialization.data(withJSONObject: json(created: created), options: [.prettyPrinted, .sortedKeys])
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url, options: .atomic)
        return url
    }
}

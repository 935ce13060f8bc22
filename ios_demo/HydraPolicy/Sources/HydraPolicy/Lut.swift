import Foundation

// Reader for lut.json (schema: hydravit_edge/schemas/lut.schema.json), ported from
// hydravit_edge/lut.py: device lookup (exact, case-insensitive, then file-name form) and the
// effective policy (table-wide `policy` overlaid with a device's `policy` overrides).

public let lutFormat = "hydravit-edge-lut"
public let lutSchemaVersion = 1

public struct LutDevice {
    public let entry: [String: Any]
    public let policy: PolicyConfig
    /// k -> p90 ms, what the policy compares with the budget: the k whose steady memory
    /// (`rss_anon_mb`) fits the entry's `memory_budget_mb` (the smallest k always stays).
    public let latency: [Int: Double]
    /// Every k of the entry's rows.
    public let ks: [Int]
    /// Most resident memory the materialised k may take together here (nil: the app's default).
    public var memoryBudgetMb: Double? { jsonNumber(entry["memory_budget_mb"]) }

    public init(entry: [String: Any], policy: PolicyConfig) throws {
        guard let rows = entry["rows"] as? [[String: Any]], !rows.isEmpty else {
            throw PolicyError("invalid_lut", "device entry has no rows")
        }
        var all: [Int: (p90: Double, memory: Double?)] = [:]
        for row in rows {
            guard let k = jsonNumber(row["k"]), let p90 = jsonNumber(row["p90_ms"]) else {
                throw PolicyError("invalid_lut", "a LUT row needs k and p90_ms")
            }
            all[Int(k)] = (p90, jsonNumber(row["rss_anon_mb"]))
        }
        let budget = jsonNumber(entry["memory_budget_mb"])
        let smallest = all.keys.min()!
        var latency: [Int: Double] = [:]
        for (k, row) in all {
            if let b = budget, let m = row.memory, m > b, k != smallest { continue }
            latency[k] = row.p90
        }
        self.entry = entry
        self.policy = policy
        self.latency = latency
        self.ks = all.keys.sorted()
    }

    public var name: String { entry["name"] as? String ?? "" }
    public var backend: String { entry["backend"] as? String ?? "" }

    public func decide(_ inputs: PolicyInput, previousK: Int? = nil) throws -> Decision {
        try Policy.decide(latency: latency, policy: policy, inputs: inputs, previousK: previousK)
    }

    public func state(previousK: Int? = nil) throws -> PolicyState {
        try PolicyState(latency: latency, policy: policy, previousK: previousK)
    }
}

public struct Lut {
    public let json: [String: Any]
    public let policyJSON: [String: Any]
    public let policy: PolicyConfig
    public let devices: [[String: Any]]

    public init(json: [String: Any]) throws {
        guard json["format"] as? String == lutFormat else {
            throw PolicyError("invalid_lut", "not a hydravit-edge lookup table (format '\(json["format"] ?? "none")')")
        }
        guard let version = jsonNumber(json["schema_version"]), Int(version) == lutSchemaVersion else {
            throw PolicyError("invalid_lut", "LUT schema_version \(json["schema_version"] ?? "none") is not supported (reads \(lutSchemaVersion))")
        }
        guard let policyJSON = json["policy"] as? [String: Any] else {
            throw PolicyError("invalid_lut", "the LUT has no policy section")
        }
        guard let devices = json["devices"] as? [[String: Any]], !devices.isEmpty else {
            throw PolicyError("invalid_lut", "the LUT has no devices")
        }
        self.json = json
        self.policyJSON = policyJSON
        self.policy = try PolicyConfig(json: policyJSON)
        self.devices = devices
    }

    public init(data: Data) throws {
        guard let obj = try? JSONSerialization.jsonObject(with: data), let json = obj as? [String: Any] else {
            throw PolicyError("invalid_lut", "lut.json is not a JSON object")
        }
        try self.init(json: json)
    }

    public func deviceNames() -> [String] {
        var seen = Set<String>()
        return devices.compactMap { $0["name"] as? String }.filter { seen.insert($0).inserted }
    }

    /// The entry for `name`; the first one unless `backend`. Throws PolicyError("unknown_device").
    public func device(named name: String, backend: String? = nil) throws -> LutDevice {
        guard let found = Lut.matchName(name, deviceNames()) else {
            throw PolicyError("unknown_device", "the LUT has no device '\(name)'; it has: \(deviceNames().joined(separator: ", "))")
        }
        var entries = devices.filter { $0["name"] as? String == found }
        if let backend = backend {
            entries = entries.filter { $0["backend"] as? String == backend }
            if entries.isEmpty { throw PolicyError("unknown_device", "the LUT has no '\(backend)' rows for device '\(found)'") }
        }
        let entry = entries[0]
        var merged = policyJSON
        if let over = entry["policy"] as? [String: Any] {
            for (key, value) in over { merged[key] = value }
        }
        return try LutDevice(entry: entry, policy: PolicyConfig(json: merged))
    }

    /// File-name form of a device name (as reports/<name>.json), lower-cased for matching.
    public static func slug(_ name: String) -> String {
        name.trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "[^A-Za-z0-9._-]+", with: "-", options: .regularExpression)
            .trimmingCharacters(in: CharacterSet(charactersIn: "-."))
            .lowercased()
    }

    /// Exact, else case-insensitive, else by `slug`.
    public static func matchName(_ wanted: String, _ names: [String]) -> String? {
        names.first { $0 == wanted }
            ?? names.first { $0.lowercased() == wanted.lowercased() }
            ?? names.first { slug($0) == slug(wanted) }
    }
}

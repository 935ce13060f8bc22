import Foundation

// Reader for lut.json (schema: hydravit_edge/schemas/lut.schema.json), ported from
// hydravit_edge/contract/lut.py: device lookup (exact, case-insensitive, then file-name form), the
// effective policy (table-wide `policy` overlaid with a device's `policy` overrides) and the rows
// as (k, precision) options (a row's precision: its own, else its entry's, else fp32).

public let lutFormat = "hydravit-edge-lut"
public let lutSchemaVersion = 1

public struct LutDevice {
    public let entry: [String: Any]
    public let policy: PolicyConfig
    /// The rows as the policy's options: those whose steady memory (`rss_anon_mb`) fits the entry's
    /// `memory_budget_mb` (the smallest k's rows always stay), each a candidate unless the LUT marks
    /// it off the frontier (`frontier: false`); sorted by k, then the precision order.
    public let options: [PolicyOption]
    /// k -> p90 ms of each k's default row (fp32, else its first precision) among `options`.
    public let latency: [Int: Double]
    /// Every k of the entry's rows.
    public let ks: [Int]
    /// The precisions of the entry's rows, in the precision order.
    public let precisions: [String]
    /// Most resident memory the materialised k may take together here (nil: the app's default).
    public var memoryBudgetMb: Double? { jsonNumber(entry["memory_budget_mb"]) }

    public init(entry: [String: Any], policy: PolicyConfig) throws {
        guard let rows = entry["rows"] as? [[String: Any]], !rows.isEmpty else {
            throw PolicyError("invalid_lut", "device entry has no rows")
        }
        let entryPrecision = entry["precision"] as? String ?? "fp32"
        var all: [(option: PolicyOption, memory: Double?)] = []
        for row in rows {
            guard let k = jsonInt(row["k"]), let p90 = jsonNumber(row["p90_ms"]) else {
                throw PolicyError("invalid_lut", "a LUT row needs k and p90_ms")
            }
            let precision = row["precision"] as? String ?? entryPrecision
            let option = PolicyOption(k: k, precision: precision, p90Ms: p90, top1: jsonNumber(row["top1"]),
                                      macs: jsonNumber(row["macs"]).map { Int64($0) },
                                      frontier: (row["frontier"] as? Bool) ?? true)
            all.append((option: option, memory: jsonNumber(row["rss_anon_mb"])))
        }
        let sorted = try Options.checked(all.map { $0.option })  // one row per (k, precision)
        let budget = jsonNumber(entry["memory_budget_mb"])
        let smallest = all.map { $0.option.k }.min()!
        let memory = Dictionary(uniqueKeysWithValues: all.map { ($0.option.ref, $0.memory) })
        let options = sorted.filter { o in
            guard let b = budget, let m = memory[o.ref] ?? nil else { return true }
            return m <= b || o.k == smallest
        }
        self.entry = entry
        self.policy = policy
        self.options = options
        self.latency = Options.defaultLatency(options)
        self.ks = Array(Set(sorted.map { $0.k })).sorted()
        self.precisions = Array(Set(sorted.map { $0.precision })).sorted(by: precisionBefore)
    }

    public var name: String { entry["name"] as? String ?? "" }
    public var backend: String { entry["backend"] as? String ?? "" }

    public func decide(_ inputs: PolicyInput, previous: OptionRef? = nil) throws -> Decision {
        try Policy.decide(options: options, policy: policy, inputs: inputs, previous: previous)
    }

    public func decide(_ inputs: PolicyInput, previousK: Int) throws -> Decision {
        try decide(inputs, previous: OptionRef(k: previousK))
    }

    public func state(previous: OptionRef? = nil) throws -> PolicyState {
        try PolicyState(options: options, policy: policy, previous: previous)
    }

    public func state(previousK: Int) throws -> PolicyState {
        try state(previous: OptionRef(k: previousK))
    }

    /// The policy over the (k, precision) options the app can run (`available`: what the bundled export
    /// holds), as the Python runtime builds it: the LUT's rows among them; with no row of their
    /// precisions, each available option takes the latency of its k's default row (`standIn`).
    public func stateFor(_ available: [OptionRef], previous: OptionRef? = nil) throws -> (state: PolicyState, standIn: Bool) {
        let wanted = Set(available.map { OptionRef(k: $0.k, precision: $0.precision ?? "fp32") })
        let own = options.filter { wanted.contains($0.ref) }
        if !own.isEmpty { return (try PolicyState(options: own, policy: policy, previous: previous), false) }
        let standIn = wanted.filter { latency[$0.k] != nil }
            .sorted { $0.k != $1.k ? $0.k < $1.k : precisionBefore($0.precision!, $1.precision!) }
            .map { PolicyOption(k: $0.k, precision: $0.precision!, p90Ms: latency[$0.k]!) }
        guard !standIn.isEmpty else {
            let ks = Array(Set(wanted.map { $0.k })).sorted()
            throw PolicyError("no_common_k", "the LUT rows of device '\(name)' cover k \(self.ks), the app can run \(ks): none in common")
        }
        return (try PolicyState(options: standIn, policy: policy, previous: previous), true)
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

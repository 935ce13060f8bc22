import Foundation

// The battery/thermal policy that picks a head count k, ported from hydravit_edge/policy.py
// (and identical to the Android port). Same rule, thresholds from the LUT's `policy` section,
// same vectors (tests/policy_vectors.json):
//  1. caps: low-power mode, thermal state, and charging or the battery band each cap k at
//     fraction x kMax (the smallest k is always allowed); the tightest wins, ties reported in the
//     order low_power, thermal, battery;
//  2. budget: the largest k up to the cap whose p90 latency is within the budget, else the smallest k;
//  3. hysteresis: k = max(choice(battery - h), min(previousK, choice(battery))), not while charging
//     or with an unknown battery.

/// A policy input or policy data error; `code` matches the Python `PolicyError.code` and the vectors.
public struct PolicyError: Error, CustomStringConvertible, Equatable {
    public let code: String
    public let message: String

    public init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

public let thermalStates = ["nominal", "fair", "serious", "critical"]
public let policyLimits = ["none", "battery", "thermal", "low_power", "budget", "hysteresis", "switch_cost"]

private let eps = 1e-9

func fmt(_ x: Double) -> String {
    if x == x.rounded(), abs(x) < 1e15 { return String(Int64(x)) }
    return String(x)
}

/// A JSON number (not a boolean); nil for anything else.
func jsonNumber(_ value: Any?) -> Double? {
    guard let value = value, !(value is NSNull) else { return nil }
    #if canImport(Darwin)
    if let b = value as? NSNumber {
        if CFGetTypeID(b) == CFBooleanGetTypeID() { return nil }
        return b.doubleValue
    }
    #else
    if value is Bool { return nil }
    #endif
    if let d = value as? Double { return d }
    if let i = value as? Int { return Double(i) }
    return nil
}

public struct Band: Equatable {
    public let name: String
    public let minPercent: Double
    public let maxKFraction: Double
}

public struct PolicyConfig: Equatable {
    public let budgetMs: Double?
    public let hysteresisPercent: Double
    public let unknownBatteryPercent: Double
    public let chargingMaxKFraction: Double
    public let lowPowerMaxKFraction: Double
    /// Sorted by minPercent, highest first; the last starts at 0.
    public let batteryBands: [Band]
    public let thermalMaxKFraction: [String: Double]
    /// Rule 4: no rising onto a k that is not materialised within this many seconds of the last cold switch (0: off).
    public let coldSwitchMinIntervalS: Double

    public static let fields = [
        "budget_ms", "hysteresis_percent", "unknown_battery_percent", "charging_max_k_fraction",
        "low_power_max_k_fraction", "battery_bands", "thermal_max_k_fraction",
    ]
    /// Fields a policy may leave out (their defaults apply).
    public static let optionalFields = ["cold_switch_min_interval_s"]

    /// Parse a complete policy object (the LUT's table-wide policy merged with a device's overrides).
    public init(json: [String: Any]) throws {
        func invalid(_ message: String) -> PolicyError { PolicyError("invalid_policy", message) }
        func number(_ obj: [String: Any], _ key: String, _ lo: Double?, _ hi: Double?) throws -> Double {
            guard let d = jsonNumber(obj[key]), d.isFinite else {
                throw invalid("policy field \(key) must be a finite number")
            }
            if let lo = lo, d < lo { throw invalid("policy field \(key) must lie in [\(lo), \(hi ?? .infinity)], got \(d)") }
            if let hi = hi, d > hi { throw invalid("policy field \(key) must lie in [\(lo ?? -.infinity), \(hi)], got \(d)") }
            return d
        }
        let keys = Set(json.keys)
        let unknown = keys.subtracting(Self.fields).subtracting(Self.optionalFields)
        if !unknown.isEmpty { throw invalid("unknown policy field(s) \(unknown.sorted())") }
        let missing = Self.fields.filter { !keys.contains($0) }
        if !missing.isEmpty { throw invalid("policy lacks field(s) \(missing)") }
        if json["budget_ms"] is NSNull {
            budgetMs = nil
        } else {
            let b = try number(json, "budget_ms", nil, nil)
            if b <= 0 { throw invalid("policy field budget_ms must be > 0 or null, got \(b)") }
            budgetMs = b
        }
        guard let bandsJSON = json["battery_bands"] as? [Any], !bandsJSON.isEmpty else {
            throw invalid("policy field battery_bands must be a non-empty list")
        }
        var bands: [Band] = []
        for (i, item) in bandsJSON.enumerated() {
            guard let b = item as? [String: Any], Set(b.keys) == ["name", "min_percent", "max_k_fraction"] else {
                throw invalid("battery_bands[\(i)] must have exactly name, min_percent, max_k_fraction")
            }
            guard let name = b["name"] as? String, !name.isEmpty else {
                throw invalid("battery_bands[\(i)].name must be a non-empty string")
            }
            bands.append(Band(name: name, minPercent: try number(b, "min_percent", 0, 100),
                              maxKFraction: try number(b, "max_k_fraction", 0, 1)))
        }
        bands.sort { $0.minPercent > $1.minPercent }
        if Set(bands.map { $0.minPercent }).count != bands.count || Set(bands.map { $0.name }).count != bands.count {
            throw invalid("battery_bands need distinct names and distinct min_percent values")
        }
        if bands.last!.minPercent != 0 { throw invalid("battery_bands need a band with min_percent 0") }
        guard let thermal = json["thermal_max_k_fraction"] as? [String: Any], Set(thermal.keys) == Set(thermalStates) else {
            throw invalid("thermal_max_k_fraction needs exactly the keys \(thermalStates.joined(separator: ", "))")
        }
        var t: [String: Double] = [:]
        for s in thermalStates { t[s] = try number(thermal, s, 0, 1) }
        batteryBands = bands
        thermalMaxKFraction = t
        hysteresisPercent = try number(json, "hysteresis_percent", 0, 100)
        unknownBatteryPercent = try number(json, "unknown_battery_percent", 0, 100)
        chargingMaxKFraction = try number(json, "charging_max_k_fraction", 0, 1)
        lowPowerMaxKFraction = try number(json, "low_power_max_k_fraction", 0, 1)
        if json["cold_switch_min_interval_s"] == nil || json["cold_switch_min_interval_s"] is NSNull {
            coldSwitchMinIntervalS = 30
        } else {
            coldSwitchMinIntervalS = try number(json, "cold_switch_min_interval_s", 0, nil)
        }
    }

    public func band(for percent: Double) -> Band {
        batteryBands.first { percent >= $0.minPercent } ?? batteryBands.last!
    }
}

/// Power state for one decision; nil battery = unknown, nil budgetMs = the policy's budget.
public struct PolicyInput: Equatable {
    public var battery: Double?
    public var charging: Bool
    public var lowPower: Bool
    public var thermal: String?
    public var budgetMs: Double?
    /// The k whose sessions are built now (nil: every k resident, or unknown).
    public var materialized: Set<Int>?
    /// Seconds since the last cold switch (nil: none yet).
    public var coldSwitchAgeS: Double?
    /// Set when the JSON form's `materialized` held something other than head counts (checked() throws).
    var invalidMaterialized = false

    public init(battery: Double? = nil, charging: Bool = false, lowPower: Bool = false, thermal: String? = nil,
                budgetMs: Double? = nil, materialized: Set<Int>? = nil, coldSwitchAgeS: Double? = nil) {
        self.battery = battery
        self.charging = charging
        self.lowPower = lowPower
        self.thermal = thermal
        self.budgetMs = budgetMs
        self.materialized = materialized
        self.coldSwitchAgeS = coldSwitchAgeS
    }

    /// From the vectors' JSON form: battery, charging, low_power, thermal, budget_ms, materialized,
    /// cold_switch_age_s (all optional).
    public init(json: [String: Any]) {
        var mat: Set<Int>? = nil
        var invalid = false
        if let items = json["materialized"] as? [Any] {
            var ks = Set<Int>()
            for item in items {
                if let n = item as? NSNumber, !(item is String), n.doubleValue == n.doubleValue.rounded() {
                    ks.insert(n.intValue)
                } else {
                    invalid = true
                }
            }
            mat = ks
        }
        self.init(battery: jsonNumber(json["battery"]),
                  charging: (json["charging"] as? Bool) ?? false,
                  lowPower: (json["low_power"] as? Bool) ?? false,
                  thermal: json["thermal"] as? String,
                  budgetMs: jsonNumber(json["budget_ms"]),
                  materialized: mat,
                  coldSwitchAgeS: jsonNumber(json["cold_switch_age_s"]))
        invalidMaterialized = invalid
    }

    public func checked() throws -> PolicyInput {
        if let b = battery, b.isNaN || b < 0 || b > 100 {
            throw PolicyError("invalid_battery", "battery \(fmt(b))% is outside 0..100")
        }
        var copy = self
        if let t = thermal {
            let norm = t.trimmingCharacters(in: .whitespaces).lowercased()
            guard thermalStates.contains(norm) else {
                throw PolicyError("invalid_thermal", "thermal state must be one of \(thermalStates.joined(separator: ", ")), got '\(t)'")
            }
            copy.thermal = norm
        }
        if let b = budgetMs, !b.isFinite || b <= 0 {
            throw PolicyError("invalid_budget", "latency budget must be a number of milliseconds > 0, got \(b)")
        }
        if invalidMaterialized {
            throw PolicyError("invalid_switch_state", "materialized must be a list of head counts")
        }
        if let age = coldSwitchAgeS, !age.isFinite || age < 0 {
            throw PolicyError("invalid_switch_state", "cold_switch_age_s must be a number of seconds >= 0, got \(age)")
        }
        return copy
    }
}

public struct Decision: Equatable {
    public var k: Int
    /// none | battery | thermal | low_power | budget | hysteresis
    public var limit: String
    public var reason: String
    public var capK: Int
    /// Band name, or "charging".
    public var band: String?
    public var batteryPercent: Double
    public var budgetMs: Double?
    public var p90Ms: Double
    /// nil when there is no budget.
    public var fitsBudget: Bool?
    public var held: Bool = false
}

public enum Policy {
    /// Largest k in `ks` with k <= fraction * max(ks); the smallest k when none is.
    public static func capForFraction(_ ks: [Int], _ fraction: Double) -> Int {
        let limit = fraction * Double(ks.max()!) + eps
        return ks.filter { Double($0) <= limit }.max() ?? ks.min()!
    }

    static func choose(_ latency: [Int: Double], _ policy: PolicyConfig, _ inp: PolicyInput, _ percent: Double,
                       _ budget: Double?) -> Decision {
        let ks = latency.keys.sorted()
        let kMax = ks.last!
        var caps: [(Int, String, String)] = []
        if inp.lowPower {
            let f = policy.lowPowerMaxKFraction
            caps.append((capForFraction(ks, f), "low_power", "low-power mode allows k <= \(fmt(f)) x \(kMax)"))
        }
        if let t = inp.thermal {
            let f = policy.thermalMaxKFraction[t]!
            caps.append((capForFraction(ks, f), "thermal", "thermal state '\(t)' allows k <= \(fmt(f)) x \(kMax)"))
        }
        let bandName: String
        if inp.charging {
            bandName = "charging"
            let f = policy.chargingMaxKFraction
            caps.append((capForFraction(ks, f), "battery", "charging allows k <= \(fmt(f)) x \(kMax)"))
        } else {
            let band = policy.band(for: percent)
            bandName = band.name
            caps.append((capForFraction(ks, band.maxKFraction), "battery",
                         "battery \(fmt(percent))% is in band '\(band.name)' (>= \(fmt(band.minPercent))%), which allows k <= \(fmt(band.maxKFraction)) x \(kMax)"))
        }
        var capK = kMax
        var limit = "none"
        var why: [String] = []
        for (c, code, text) in caps {
            if c < capK {
                capK = c
                limit = code
            }
            why.append("\(text) -> \(c)")
        }
        var k: Int
        var fits: Bool?
        if let budget = budget {
            let fitting = ks.filter { $0 <= capK && latency[$0]! <= budget }
            if let best = fitting.max() {
                k = best
                fits = true
                if k < capK {
                    limit = "budget"
                    why.append("k=\(capK) p90 \(latency[capK]!) ms exceeds the \(fmt(budget)) ms budget")
                }
                why.append("k=\(k) p90 \(latency[k]!) ms fits the \(fmt(budget)) ms budget")
            } else {
                k = ks.first!
                fits = false
                limit = "budget"
                why.append("no k fits the \(fmt(budget)) ms budget: using the smallest k")
            }
        } else {
            k = capK
            fits = nil
            why.append("no latency budget")
        }
        return Decision(k: k, limit: limit, reason: why.joined(separator: "; "), capK: capK, band: bandName,
                        batteryPercent: percent, budgetMs: budget, p90Ms: latency[k]!, fitsBudget: fits)
    }

    /// Pick k from `latency` (k -> p90 ms) under `policy` for `inputs`; see the comment at the top.
    public static func decide(latency: [Int: Double], policy: PolicyConfig, inputs: PolicyInput,
                              previousK: Int? = nil) throws -> Decision {
        if latency.isEmpty { throw PolicyError("empty_table", "the lookup table has no rows for this device") }
        let inp = try inputs.checked()
        let d = decidePower(latency, policy, inp, previousK)
        guard let mat = inp.materialized, let prev = previousK, latency[prev] != nil, mat.contains(prev),
              !mat.contains(d.k), d.k > prev, policy.coldSwitchMinIntervalS > 0,
              let age = inp.coldSwitchAgeS, age < policy.coldSwitchMinIntervalS else {
            return d
        }
        var held = d
        held.k = prev
        held.limit = "switch_cost"
        held.reason = d.reason + "; switch cost: k=\(d.k) is not materialised and the last cold switch was \(fmt(age)) s ago (< \(fmt(policy.coldSwitchMinIntervalS)) s): staying at k=\(prev)"
        held.p90Ms = latency[prev]!
        held.fitsBudget = d.budgetMs.map { latency[prev]! <= $0 }
        held.held = true
        return held
    }

    /// Rules 1-3 (caps, budget, hysteresis) for checked inputs.
    static func decidePower(_ latency: [Int: Double], _ policy: PolicyConfig, _ inp: PolicyInput,
                            _ previousK: Int?) -> Decision {
        let budget = inp.budgetMs ?? policy.budgetMs
        let unknown = inp.battery == nil
        let percent = inp.battery ?? policy.unknownBatteryPercent
        var now = choose(latency, policy, inp, percent, budget)
        let prefix = unknown && !inp.charging ? "battery unknown, treated as \(fmt(percent))%; " : ""
        if let prev = previousK, latency[prev] == nil {
            now.reason = prefix + now.reason + "; previous k=\(prev) is not in the table, ignored"
            return now
        }
        guard let prev = previousK, !unknown, !inp.charging, policy.hysteresisPercent > 0, prev < now.k else {
            now.reason = prefix + now.reason
            return now
        }
        let conservative = choose(latency, policy, inp, max(0, percent - policy.hysteresisPercent), budget)
        let k = max(conservative.k, min(prev, now.k))
        if k == now.k {
            now.reason = prefix + now.reason
            return now
        }
        var held = now
        held.k = k
        held.limit = "hysteresis"
        held.reason = prefix + now.reason + "; hysteresis: staying at k=\(k) (previous k=\(prev)) until the battery is \(fmt(policy.hysteresisPercent))% above the band edge"
        held.p90Ms = latency[k]!
        held.fitsBudget = budget.map { latency[k]! <= $0 }
        held.held = true
        return held
    }
}

/// Remembers the previous k for hysteresis; one per running model.
public final class PolicyState {
    public let latency: [Int: Double]
    public let policy: PolicyConfig
    public var previousK: Int?
    public private(set) var last: Decision?

    public init(latency: [Int: Double], policy: PolicyConfig, previousK: Int? = nil) throws {
        if latency.isEmpty { throw PolicyError("empty_table", "the lookup table has no rows for this device") }
        self.latency = latency
        self.policy = policy
        self.previousK = previousK
    }

    @discardableResult
    public func update(_ inputs: PolicyInput) throws -> Decision {
        let d = try Policy.decide(latency: latency, policy: policy, inputs: inputs, previousK: previousK)
        previousK = d.k
        last = d
        return d
    }

    public func reset() {
        previousK = nil
        last = nil
    }
}

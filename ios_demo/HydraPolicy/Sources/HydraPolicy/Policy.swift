import Foundation

// The battery/thermal policy that picks a (k, precision) option, ported from hydravit_edge/policy.py
// (and identical to the Android port). Same rule, thresholds from the LUT's `policy` section,
// same vectors (tests/policy_vectors.json). Candidates are `PolicyOption`s (the old [Int: Double]
// is every k at fp32); only those the LUT puts on the frontier, while the caps count every option.
// Rank: `Ranking` (top1 when every candidate has it, else k; then lower p90, the precision order).
//  1. caps: low-power mode, thermal state, and charging or the battery band each cap k at
//     fraction x kMax over the distinct k (the smallest k is always allowed); the tightest wins,
//     ties reported in the order low_power, thermal, battery. In latency: capMs = the largest p90
//     among the options with k = capK; allowed: candidates with k <= capK, or a p90 in (0, capMs];
//  2. budget: the highest-ranked allowed option whose p90 is within the budget, else the smallest
//     allowed k at its fastest precision;
//  3. hysteresis: a rise above the previous option waits until the battery is h above the band
//     edge: the higher-ranked of choice(battery - h) and the previous option (while it is allowed
//     and within the budget), never above choice(battery); not while charging or with an unknown battery;
//  4. switch cost: no rise onto an option that is not materialised within coldSwitchMinIntervalS
//     of the last cold switch (the previous option must be materialised, allowed, within the budget).

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
    /// The options whose sessions are built now (nil: every option resident, or unknown); a bare k: `OptionRef`.
    public var materialized: Set<OptionRef>?
    /// Seconds since the last cold switch (nil: none yet).
    public var coldSwitchAgeS: Double?
    /// Set when the JSON form's `materialized` held something other than option references (checked() throws).
    var invalidMaterialized = false

    public init(battery: Double? = nil, charging: Bool = false, lowPower: Bool = false, thermal: String? = nil,
                budgetMs: Double? = nil, materialized: Set<OptionRef>? = nil, coldSwitchAgeS: Double? = nil) {
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
        var mat: Set<OptionRef>? = nil
        var invalid = false
        if let items = json["materialized"] as? [Any] {
            var refs = Set<OptionRef>()
            for item in items {
                if let ref = OptionRef.parse(item) {
                    refs.insert(ref)
                } else {
                    invalid = true
                }
            }
            mat = refs
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
            throw PolicyError("invalid_switch_state", "materialized must be a list of head counts k, 'k@precision' or {k, precision}")
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
    public var precision: String = "fp32"
    public var top1: Double? = nil
    /// The cap in latency: the largest p90 among the options with k = capK.
    public var capMs: Double? = nil
}

/// Validated options of one decision: all of them (caps), the frontier candidates, their rank.
struct OptionTable {
    let options: [PolicyOption]
    let candidates: [PolicyOption]
    let ranking: Ranking
    let ks: [Int]
    /// The options have several precisions: reasons name them.
    let several: Bool

    init(_ options: [PolicyOption]) throws {
        let all = try Options.checked(options)
        let frontier = all.filter { $0.frontier }
        if frontier.isEmpty {
            throw PolicyError("empty_table", "no row of this device's table is on its accuracy/latency frontier")
        }
        self.options = all
        self.candidates = frontier
        self.ranking = Ranking(frontier)
        self.ks = Array(Set(all.map { $0.k })).sorted()
        self.several = Set(all.map { $0.precision }).count > 1
    }

    func label(_ o: PolicyOption) -> String { o.label(several) }
}

/// A decision, its option and the candidates the caps allowed.
struct PolicyChoice {
    var decision: Decision
    var option: PolicyOption
    let allowed: [PolicyOption]

    /// `o` may be kept instead of this choice: allowed by the caps and within the budget.
    func eligible(_ o: PolicyOption) -> Bool {
        allowed.contains(o) && (decision.budgetMs.map { o.p90Ms <= $0 } ?? true)
    }

    func holding(_ o: PolicyOption, limit: String, reason: String) -> PolicyChoice {
        var d = decision
        d.k = o.k
        d.precision = o.precision
        d.top1 = o.top1
        d.p90Ms = o.p90Ms
        d.limit = limit
        d.reason = reason
        d.held = true
        d.fitsBudget = decision.budgetMs.map { o.p90Ms <= $0 }
        return PolicyChoice(decision: d, option: o, allowed: allowed)
    }

    func explained(_ reason: String) -> PolicyChoice {
        var c = self
        c.decision.reason = reason
        return c
    }
}

/// Python's "%.3g" (trailing zeros dropped), for the reasons.
func ms(_ x: Double) -> String { String(format: "%.3g", x) }

public enum Policy {
    /// Largest k in `ks` with k <= fraction * max(ks); the smallest k when none is.
    public static func capForFraction(_ ks: [Int], _ fraction: Double) -> Int {
        let limit = fraction * Double(ks.max()!) + eps
        return ks.filter { Double($0) <= limit }.max() ?? ks.min()!
    }

    /// Rules 1 and 2 at battery level `percent`.
    static func choose(_ table: OptionTable, _ policy: PolicyConfig, _ inp: PolicyInput, _ percent: Double,
                       _ budget: Double?) -> PolicyChoice {
        let ks = table.ks
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
        let capMs = table.options.filter { $0.k == capK }.map { $0.p90Ms }.max()!
        var allowed = table.candidates.filter { $0.k <= capK || ($0.p90Ms > 0 && $0.p90Ms <= capMs) }
        if allowed.isEmpty {
            let k0 = table.candidates.map { $0.k }.min()!
            allowed = table.candidates.filter { $0.k == k0 }
        }
        if table.several && capK < kMax { why.append("a larger k is allowed at a p90 within k=\(capK)'s \(ms(capMs)) ms") }
        let top = table.ranking.best(allowed)
        let pick: PolicyOption
        let fits: Bool?
        if let budget = budget {
            let fitting = allowed.filter { $0.p90Ms <= budget }
            if !fitting.isEmpty {
                pick = table.ranking.best(fitting)
                fits = true
                if pick != top {
                    limit = "budget"
                    why.append("\(table.label(top)) p90 \(ms(top.p90Ms)) ms exceeds the \(fmt(budget)) ms budget")
                }
                why.append("\(table.label(pick)) p90 \(ms(pick.p90Ms)) ms fits the \(fmt(budget)) ms budget")
            } else {
                pick = Ranking.smallestFastest(allowed)
                fits = false
                limit = "budget"
                let what = table.several ? "option" : "k"
                let how = table.several ? " at its fastest precision" : ""
                why.append("no \(what) fits the \(fmt(budget)) ms budget (\(table.label(pick)) p90 \(ms(pick.p90Ms)) ms): using the smallest k\(how)")
            }
        } else {
            pick = top
            fits = nil
            why.append("no latency budget")
        }
        if table.several && budget == nil { why.append("\(table.label(pick)) ranks highest") }
        let d = Decision(k: pick.k, limit: limit, reason: why.joined(separator: "; "), capK: capK, band: bandName,
                         batteryPercent: percent, budgetMs: budget, p90Ms: pick.p90Ms, fitsBudget: fits,
                         precision: pick.precision, top1: pick.top1, capMs: capMs)
        return PolicyChoice(decision: d, option: pick, allowed: allowed)
    }

    /// Pick k from `latency` (k -> p90 ms: every k at fp32) under `policy` for `inputs`; see the comment at the top.
    public static func decide(latency: [Int: Double], policy: PolicyConfig, inputs: PolicyInput,
                              previousK: Int? = nil) throws -> Decision {
        try decide(options: Options.of(latency), policy: policy, inputs: inputs, previous: previousK.map { OptionRef(k: $0) })
    }

    /// Pick an option from `options` under `policy` for `inputs`; `previous`: the option in use.
    public static func decide(options: [PolicyOption], policy: PolicyConfig, inputs: PolicyInput,
                              previous: OptionRef? = nil) throws -> Decision {
        try decide(table: try OptionTable(options), policy: policy, inputs: inputs, previous: previous)
    }

    static func decide(table: OptionTable, policy: PolicyConfig, inputs: PolicyInput, previous: OptionRef?) throws -> Decision {
        let inp = try inputs.checked()
        let prev = previous.flatMap { $0.resolve(table.candidates) }
        let c = decidePower(table, policy, inp, previous, prev)
        let interval = policy.coldSwitchMinIntervalS
        guard let mat = inp.materialized, let p = prev, interval > 0, let age = inp.coldSwitchAgeS, age < interval else {
            return c.decision
        }
        let resident = Set(mat.compactMap { $0.resolve(table.candidates)?.ref })
        guard resident.contains(p.ref), !resident.contains(c.option.ref), table.ranking.above(c.option, p),
              c.eligible(p) else {
            return c.decision
        }
        let reason = c.decision.reason + "; switch cost: \(table.label(c.option)) is not materialised and the last cold switch was \(fmt(age)) s ago (< \(fmt(interval)) s): staying at \(table.label(p))"
        return c.holding(p, limit: "switch_cost", reason: reason).decision
    }

    /// Rules 1-3 (caps, budget, hysteresis) for checked inputs; `prev`: the previous option among the candidates.
    static func decidePower(_ table: OptionTable, _ policy: PolicyConfig, _ inp: PolicyInput, _ ref: OptionRef?,
                            _ prev: PolicyOption?) -> PolicyChoice {
        let budget = inp.budgetMs ?? policy.budgetMs
        let unknown = inp.battery == nil
        let percent = inp.battery ?? policy.unknownBatteryPercent
        let now = choose(table, policy, inp, percent, budget)
        let prefix = unknown && !inp.charging ? "battery unknown, treated as \(fmt(percent))%; " : ""
        if let r = ref, prev == nil {
            let whereNot = r.resolve(table.options) != nil ? "is off the frontier" : "is not in the table"
            return now.explained(prefix + now.decision.reason + "; previous \(r.text) \(whereNot), ignored")
        }
        guard let p = prev, !unknown, !inp.charging, policy.hysteresisPercent > 0, table.ranking.above(now.option, p) else {
            return now.explained(prefix + now.decision.reason)
        }
        let low = choose(table, policy, inp, max(0, percent - policy.hysteresisPercent), budget).option
        let held = now.eligible(p) && table.ranking.above(p, low) ? p : low
        if !table.ranking.above(now.option, held) { return now.explained(prefix + now.decision.reason) }
        let reason = prefix + now.decision.reason + "; hysteresis: staying at \(table.label(held)) (previous \(table.label(p))) until the battery is \(fmt(policy.hysteresisPercent))% above the band edge"
        return now.holding(held, limit: "hysteresis", reason: reason)
    }
}

/// Remembers the previous option for hysteresis; one per running model.
public final class PolicyState {
    let table: OptionTable
    /// k -> p90 ms of each k's default option (fp32, else its first precision): the old table form.
    public let latency: [Int: Double]
    public let policy: PolicyConfig
    public var previous: OptionRef?
    public private(set) var last: Decision?

    public var options: [PolicyOption] { table.options }

    /// The k of the previous option; setting it names k at fp32, else k's first precision.
    public var previousK: Int? {
        get { previous?.k }
        set { previous = newValue.map { OptionRef(k: $0) } }
    }

    public init(options: [PolicyOption], policy: PolicyConfig, previous: OptionRef? = nil) throws {
        let table = try OptionTable(options)
        self.table = table
        self.latency = Options.defaultLatency(table.options)
        self.policy = policy
        self.previous = previous
    }

    /// The old form: every k of `latency` at fp32.
    public convenience init(latency: [Int: Double], policy: PolicyConfig, previousK: Int? = nil) throws {
        try self.init(options: Options.of(latency), policy: policy, previous: previousK.map { OptionRef(k: $0) })
    }

    @discardableResult
    public func update(_ inputs: PolicyInput) throws -> Decision {
        let d = try Policy.decide(table: table, policy: policy, inputs: inputs, previous: previous)
        previous = OptionRef(k: d.k, precision: d.precision)
        last = d
        return d
    }

    public func reset() {
        previous = nil
        last = nil
    }
}

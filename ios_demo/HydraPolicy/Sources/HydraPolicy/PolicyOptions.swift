import Foundation

// The policy's candidates, ported from hydravit_edge/policy_options.py (and identical to the
// Android port): (k, precision) options, the rank that orders them, and references to them
// (k, "k@precision", {k, precision}).
//
// Rank ("more accurate"): the highest top1 when every candidate has one, else the largest k;
// ties: lower p90, then `precisionOrder` (other names after, alphabetically), then larger k.
// A bare k names k at fp32 where the table has it, else k's first precision in that order.

/// The precisions in the order that breaks rank ties (hydravit_edge.precision.PRECISIONS).
public let precisionOrder = ["fp32", "fp16", "int8", "int8-static"]

func precisionIndex(_ name: String) -> Int { precisionOrder.firstIndex(of: name) ?? precisionOrder.count }

func unknownName(_ name: String) -> String { precisionOrder.contains(name) ? "" : name }

/// `a` comes before `b` in the precision order (names outside it after, alphabetically).
func precisionBefore(_ a: String, _ b: String) -> Bool {
    let ia = precisionIndex(a), ib = precisionIndex(b)
    if ia != ib { return ia < ib }
    return unknownName(a) < unknownName(b)
}

/// Sorted by k, then the precision order.
func byKAndPrecision(_ a: PolicyOption, _ b: PolicyOption) -> Bool {
    if a.k != b.k { return a.k < b.k }
    return precisionBefore(a.precision, b.precision)
}

/// A JSON integer (a whole number, not a boolean); nil for anything else.
func jsonInt(_ value: Any?) -> Int? {
    guard let d = jsonNumber(value), d == d.rounded(), abs(d) < 1e15 else { return nil }
    return Int(d)
}

/// One (k, precision) the policy may pick; `frontier` false: the LUT marks it dominated (not a candidate).
public struct PolicyOption: Equatable {
    public let k: Int
    public let precision: String
    /// Latency compared with the budget; 0: not measured.
    public let p90Ms: Double
    public let top1: Double?
    public let macs: Int64?
    public let frontier: Bool

    public init(k: Int, precision: String = "fp32", p90Ms: Double, top1: Double? = nil, macs: Int64? = nil,
                frontier: Bool = true) {
        self.k = k
        self.precision = precision
        self.p90Ms = p90Ms
        self.top1 = top1
        self.macs = macs
        self.frontier = frontier
    }

    public var ref: OptionRef { OptionRef(k: k, precision: precision) }

    func label(_ withPrecision: Bool) -> String { withPrecision ? "k=\(k) \(precision)" : "k=\(k)" }
}

/// A reference to an option; `precision` nil: "k at fp32, else its first precision" (`resolve`).
public struct OptionRef: Hashable {
    public let k: Int
    public let precision: String?

    public init(k: Int, precision: String? = nil) {
        self.k = k
        self.precision = precision
    }

    var text: String { precision.map { "k=\(k) \($0)" } ?? "k=\(k)" }

    /// The option this names among `options` (nil: not there).
    public func resolve(_ options: [PolicyOption]) -> PolicyOption? {
        let atK = options.filter { $0.k == k }
        if let p = precision { return atK.first { $0.precision == p } }
        return atK.min { precisionBefore($0.precision, $1.precision) }
    }

    private static let pattern = try! NSRegularExpression(pattern: "^\\s*(\\d+)\\s*@\\s*([A-Za-z0-9][A-Za-z0-9._-]*)\\s*$")

    /// From JSON or code: an integer k, "k@precision", {"k": k, "precision": p}, an option; nil for anything else.
    public static func parse(_ value: Any?) -> OptionRef? {
        guard let value = value, !(value is NSNull) else { return nil }
        if let r = value as? OptionRef { return r }
        if let o = value as? PolicyOption { return o.ref }
        if let s = value as? String {
            let range = NSRange(s.startIndex..., in: s)
            guard let m = pattern.firstMatch(in: s, range: range),
                  let kRange = Range(m.range(at: 1), in: s), let pRange = Range(m.range(at: 2), in: s),
                  let k = Int(s[kRange]), k >= 1 else { return nil }
            return OptionRef(k: k, precision: String(s[pRange]))
        }
        if let obj = value as? [String: Any] {
            let keys = Set(obj.keys)
            guard keys.contains("k"), keys.isSubset(of: ["k", "precision"]), let k = jsonInt(obj["k"]), k >= 1 else {
                return nil
            }
            if obj["precision"] == nil || obj["precision"] is NSNull { return OptionRef(k: k) }
            guard let p = obj["precision"] as? String, !p.isEmpty else { return nil }
            return OptionRef(k: k, precision: p)
        }
        if let k = jsonInt(value), k >= 1 { return OptionRef(k: k) }
        return nil
    }
}

/// The rank of one table's options: `before(a, b)` when a is the more preferred.
public struct Ranking {
    /// Rank by accuracy (every candidate has top1) or by k.
    public let byTop1: Bool

    public init(_ candidates: [PolicyOption]) {
        byTop1 = candidates.allSatisfy { $0.top1 != nil }
    }

    public func before(_ a: PolicyOption, _ b: PolicyOption) -> Bool {
        let accA = byTop1 ? a.top1! : Double(a.k)
        let accB = byTop1 ? b.top1! : Double(b.k)
        if accA != accB { return accA > accB }
        if a.p90Ms != b.p90Ms { return a.p90Ms < b.p90Ms }
        if a.precision != b.precision { return precisionBefore(a.precision, b.precision) }
        return a.k > b.k
    }

    public func best(_ options: [PolicyOption]) -> PolicyOption { options.min(by: before)! }

    /// `a` ranks higher than `b` (a move from b to a is a rise).
    public func above(_ a: PolicyOption, _ b: PolicyOption) -> Bool { before(a, b) }

    /// The smallest k at its fastest precision (ties: the precision order).
    public static func smallestFastest(_ options: [PolicyOption]) -> PolicyOption {
        let k0 = options.map { $0.k }.min()!
        return options.filter { $0.k == k0 }.min { a, b in
            if a.p90Ms != b.p90Ms { return a.p90Ms < b.p90Ms }
            return byKAndPrecision(a, b)  // one k: by the precision order
        }!
    }
}

public enum Options {
    /// The old table form: every k at fp32, no accuracy.
    public static func of(_ latency: [Int: Double]) -> [PolicyOption] {
        latency.map { PolicyOption(k: $0.key, precision: "fp32", p90Ms: $0.value) }
    }

    /// Validated and sorted; throws `empty_table` when there are none, `invalid_table` for a bad or repeated one.
    public static func checked(_ options: [PolicyOption]) throws -> [PolicyOption] {
        if options.isEmpty { throw PolicyError("empty_table", "the lookup table has no rows for this device") }
        for o in options {
            if o.k < 1 { throw PolicyError("invalid_table", "option k must be an integer >= 1, got \(o.k)") }
            if o.precision.isEmpty { throw PolicyError("invalid_table", "option precision must be a non-empty string") }
            if !o.p90Ms.isFinite || o.p90Ms < 0 {
                throw PolicyError("invalid_table", "option \(o.ref.text): p90_ms must be a number >= 0, got \(o.p90Ms)")
            }
            if let t = o.top1, !t.isFinite || t < 0 || t > 1 {
                throw PolicyError("invalid_table", "option \(o.ref.text): top1 must be a fraction 0..1, got \(t)")
            }
        }
        var seen = Set<OptionRef>()
        var twice: [String] = []
        for o in options where !seen.insert(o.ref).inserted {
            twice.append("\(o.k)@\(o.precision)")
        }
        if !twice.isEmpty {
            throw PolicyError("invalid_table", "the table lists (k, precision) twice: \(twice.joined(separator: ", "))")
        }
        return options.sorted(by: byKAndPrecision)
    }

    /// k -> p90 ms of each k's default option (fp32 where present, else its first precision).
    public static func defaultLatency(_ options: [PolicyOption]) -> [Int: Double] {
        var out: [Int: Double] = [:]
        for k in Set(options.map { $0.k }) {
            out[k] = OptionRef(k: k).resolve(options)!.p90Ms
        }
        return out
    }
}

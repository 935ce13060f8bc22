package org.hydravit.edge.policy

import org.json.JSONArray
import org.json.JSONObject

/**
 * The battery/thermal policy that picks a (k, precision) option, ported from `hydravit_edge/policy.py`.
 *
 * Same rule, same thresholds (fields of the LUT's `policy` section), same vectors
 * (`tests/policy_vectors.json`).  Candidates are [PolicyOption]s (the old `Map<Int, Double>` is
 * every k at fp32); only those the LUT puts on the frontier, while the caps count every option.
 * Rank: [Ranking] (top1 when every candidate has it, else k; then lower p90, the precision order).
 *  1. caps: low-power mode, thermal state, and charging or the battery band each cap k at
 *     `fraction x kMax` over the distinct k (the smallest k is always allowed); the tightest wins,
 *     ties reported in the order low_power, thermal, battery.  In latency: capMs = the largest p90
 *     among the options with k = capK; allowed: candidates with k <= capK, or a p90 in (0, capMs];
 *  2. budget: the highest-ranked allowed option whose p90 is within the budget, else the smallest
 *     allowed k at its fastest precision;
 *  3. hysteresis: a rise above the previous option waits until the battery is h above the band
 *     edge: the higher-ranked of choice(battery - h) and the previous option (while it is allowed
 *     and within the budget), never above choice(battery); not while charging or with an unknown battery;
 *  4. switch cost: no rise onto an option that is not materialised within coldSwitchMinIntervalS
 *     of the last cold switch (the previous option must be materialised, allowed, within the budget).
 */

/** A policy input or policy data error; [code] matches the Python `PolicyError.code` and the vectors. */
class PolicyException(val code: String, message: String) : IllegalArgumentException(message)

val THERMAL_STATES: List<String> = listOf("nominal", "fair", "serious", "critical")
val LIMITS: List<String> = listOf("none", "battery", "thermal", "low_power", "budget", "hysteresis", "switch_cost")

private const val EPS = 1e-9

data class Band(val name: String, val minPercent: Double, val maxKFraction: Double)

data class PolicyConfig(
    val budgetMs: Double?,
    val hysteresisPercent: Double,
    val unknownBatteryPercent: Double,
    val chargingMaxKFraction: Double,
    val lowPowerMaxKFraction: Double,
    /** Sorted by minPercent, highest first; the last starts at 0. */
    val batteryBands: List<Band>,
    val thermalMaxKFraction: Map<String, Double>,
    /** Rule 4: no rising onto a k that is not materialised within this many seconds of the last cold switch (0: off). */
    val coldSwitchMinIntervalS: Double = 30.0,
) {
    fun bandFor(percent: Double): Band = batteryBands.firstOrNull { percent >= it.minPercent } ?: batteryBands.last()

    companion object {
        val FIELDS: List<String> = listOf(
            "budget_ms", "hysteresis_percent", "unknown_battery_percent", "charging_max_k_fraction",
            "low_power_max_k_fraction", "battery_bands", "thermal_max_k_fraction",
        )
        /** Fields a policy may leave out (their defaults apply). */
        val OPTIONAL_FIELDS: List<String> = listOf("cold_switch_min_interval_s")

        /** Parse a complete policy object (the LUT's table-wide policy merged with a device's overrides). */
        fun fromJson(obj: JSONObject): PolicyConfig {
            val keys = obj.keys().asSequence().toSet()
            val unknown = keys - FIELDS.toSet() - OPTIONAL_FIELDS.toSet()
            if (unknown.isNotEmpty()) invalid("unknown policy field(s) ${unknown.sorted()}")
            val missing = FIELDS.filter { it !in keys }
            if (missing.isNotEmpty()) invalid("policy lacks field(s) $missing")
            val budget = if (obj.isNull("budget_ms")) null else number(obj, "budget_ms", null, null).also {
                if (it <= 0) invalid("policy field budget_ms must be > 0 or null, got $it")
            }
            val bandsJson = obj.opt("battery_bands") as? JSONArray ?: invalid("battery_bands must be a list")
            if (bandsJson.length() == 0) invalid("policy field battery_bands must be a non-empty list")
            val bands = (0 until bandsJson.length()).map { i ->
                val b = bandsJson.opt(i) as? JSONObject ?: invalid("battery_bands[$i] must be an object")
                val bk = b.keys().asSequence().toSet()
                if (bk != setOf("name", "min_percent", "max_k_fraction")) {
                    invalid("battery_bands[$i] must have exactly name, min_percent, max_k_fraction")
                }
                val name = b.opt("name") as? String ?: invalid("battery_bands[$i].name must be a string")
                if (name.isEmpty()) invalid("battery_bands[$i].name must be a non-empty string")
                Band(name, number(b, "min_percent", 0.0, 100.0), number(b, "max_k_fraction", 0.0, 1.0))
            }.sortedByDescending { it.minPercent }
            if (bands.map { it.minPercent }.toSet().size != bands.size || bands.map { it.name }.toSet().size != bands.size) {
                invalid("battery_bands need distinct names and distinct min_percent values")
            }
            if (bands.last().minPercent != 0.0) invalid("battery_bands need a band with min_percent 0")
            val thermalJson = obj.opt("thermal_max_k_fraction") as? JSONObject
                ?: invalid("thermal_max_k_fraction must be an object")
            if (thermalJson.keys().asSequence().toSet() != THERMAL_STATES.toSet()) {
                invalid("thermal_max_k_fraction needs exactly the keys ${THERMAL_STATES.joinToString(", ")}")
            }
            val thermal = THERMAL_STATES.associateWith { number(thermalJson, it, 0.0, 1.0) }
            return PolicyConfig(
                budgetMs = budget,
                hysteresisPercent = number(obj, "hysteresis_percent", 0.0, 100.0),
                unknownBatteryPercent = number(obj, "unknown_battery_percent", 0.0, 100.0),
                chargingMaxKFraction = number(obj, "charging_max_k_fraction", 0.0, 1.0),
                lowPowerMaxKFraction = number(obj, "low_power_max_k_fraction", 0.0, 1.0),
                batteryBands = bands,
                thermalMaxKFraction = thermal,
                coldSwitchMinIntervalS = if (obj.isNull("cold_switch_min_interval_s")) 30.0
                    else number(obj, "cold_switch_min_interval_s", 0.0, null),
            )
        }

        private fun invalid(message: String): Nothing = throw PolicyException("invalid_policy", message)

        private fun number(obj: JSONObject, key: String, lo: Double?, hi: Double?): Double {
            val v = obj.opt(key)
            if (v !is Number) invalid("policy field $key must be a number, got $v")
            val d = v.toDouble()
            if (d.isNaN() || d.isInfinite()) invalid("policy field $key must be finite")
            if ((lo != null && d < lo) || (hi != null && d > hi)) invalid("policy field $key must lie in [$lo, $hi], got $d")
            return d
        }
    }
}

/** Power state for one decision; null battery = unknown, null budgetMs = the policy's budget. */
data class PolicyInput(
    val battery: Double? = null,
    val charging: Boolean = false,
    val lowPower: Boolean = false,
    val thermal: String? = null,
    val budgetMs: Double? = null,
    /** The options whose sessions are built now (null: every option resident, or unknown); a bare k: [OptionRef]. */
    val materialized: Set<OptionRef>? = null,
    /** Seconds since the last cold switch (null: none yet). */
    val coldSwitchAgeS: Double? = null,
) {
    fun checked(): PolicyInput {
        val b = battery
        if (b != null && (b.isNaN() || b < 0.0 || b > 100.0)) {
            throw PolicyException("invalid_battery", "battery ${fmt(b)}% is outside 0..100")
        }
        val t = thermal?.trim()?.lowercase()
        if (t != null && t !in THERMAL_STATES) {
            throw PolicyException("invalid_thermal", "thermal state must be one of ${THERMAL_STATES.joinToString(", ")}, got '$thermal'")
        }
        val budget = budgetMs
        if (budget != null && (budget.isNaN() || budget.isInfinite() || budget <= 0.0)) {
            throw PolicyException("invalid_budget", "latency budget must be a number of milliseconds > 0, got $budget")
        }
        val age = coldSwitchAgeS
        if (age != null && (age.isNaN() || age.isInfinite() || age < 0.0)) {
            throw PolicyException("invalid_switch_state", "cold_switch_age_s must be a number of seconds >= 0, got $age")
        }
        return copy(thermal = t)
    }

    companion object {
        /** From the vectors' JSON form: battery, charging, low_power, thermal, budget_ms, materialized, cold_switch_age_s (all optional). */
        fun fromJson(obj: JSONObject): PolicyInput = PolicyInput(
            battery = if (obj.isNull("battery")) null else obj.getDouble("battery"),
            charging = obj.optBoolean("charging", false),
            lowPower = obj.optBoolean("low_power", false),
            thermal = if (obj.isNull("thermal")) null else obj.getString("thermal"),
            budgetMs = if (obj.isNull("budget_ms")) null else obj.getDouble("budget_ms"),
            materialized = obj.optJSONArray("materialized")?.let { arr ->
                (0 until arr.length()).map { i ->
                    OptionRef.parse(arr.opt(i)) ?: throw PolicyException(
                        "invalid_switch_state", "materialized must be a list of head counts k, 'k@precision' or {k, precision}")
                }.toSet()
            },
            coldSwitchAgeS = if (obj.isNull("cold_switch_age_s")) null else obj.getDouble("cold_switch_age_s"),
        )
    }
}

data class Decision(
    val k: Int,
    /** none | battery | thermal | low_power | budget | hysteresis */
    val limit: String,
    val reason: String,
    val capK: Int,
    /** Band name, or "charging". */
    val band: String?,
    val batteryPercent: Double,
    val budgetMs: Double?,
    val p90Ms: Double,
    /** null when there is no budget. */
    val fitsBudget: Boolean?,
    val held: Boolean = false,
    val precision: String = "fp32",
    val top1: Double? = null,
    /** The cap in latency: the largest p90 among the options with k = capK. */
    val capMs: Double? = null,
)

internal fun fmt(x: Double): String =
    if (x == Math.rint(x) && kotlin.math.abs(x) < 1e15) x.toLong().toString() else x.toString()

/** Validated options of one decision: all of them (caps), the frontier candidates, their rank. */
internal class OptionTable(options: List<PolicyOption>) {
    val options: List<PolicyOption> = Options.checked(options)
    val candidates: List<PolicyOption> = this.options.filter { it.frontier }
    val ranking: Ranking
    val ks: List<Int> = this.options.map { it.k }.distinct().sorted()
    /** The options have several precisions: reasons name them. */
    val several: Boolean = this.options.map { it.precision }.distinct().size > 1

    init {
        if (candidates.isEmpty()) throw PolicyException("empty_table", "no row of this device's table is on its accuracy/latency frontier")
        ranking = Ranking(candidates)
    }

    fun label(o: PolicyOption): String = o.label(several)
}

/** A decision, its option and the candidates the caps allowed. */
internal class PolicyChoice(val decision: Decision, val option: PolicyOption, val allowed: List<PolicyOption>) {
    /** [o] may be kept instead of this choice: allowed by the caps and within the budget. */
    fun eligible(o: PolicyOption): Boolean {
        val budget = decision.budgetMs
        return o in allowed && (budget == null || o.p90Ms <= budget)
    }

    fun holding(o: PolicyOption, limit: String, reason: String): PolicyChoice = PolicyChoice(
        decision.copy(
            k = o.k, precision = o.precision, top1 = o.top1, p90Ms = o.p90Ms, limit = limit, reason = reason, held = true,
            fitsBudget = decision.budgetMs?.let { o.p90Ms <= it },
        ),
        o, allowed,
    )

    fun explained(reason: String): PolicyChoice = PolicyChoice(decision.copy(reason = reason), option, allowed)
}

private fun ms(x: Double): String = String.format(java.util.Locale.ROOT, "%.3g", x).let { t ->
    // Python's %.3g drops trailing zeros (and a bare point); so do the reasons here
    if ('e' in t || '.' !in t) t else t.trimEnd('0').trimEnd('.')
}

object Policy {
    /** Largest k in [ks] with k <= fraction * max(ks); the smallest k when none is. */
    fun capForFraction(ks: List<Int>, fraction: Double): Int {
        val limit = fraction * ks.max() + EPS
        return ks.filter { it <= limit }.maxOrNull() ?: ks.min()
    }

    /** Rules 1 and 2 at battery level [percent]. */
    private fun choose(table: OptionTable, policy: PolicyConfig, inp: PolicyInput, percent: Double, budget: Double?): PolicyChoice {
        val ks = table.ks
        val kMax = ks.last()
        val caps = mutableListOf<Triple<Int, String, String>>()
        if (inp.lowPower) {
            val f = policy.lowPowerMaxKFraction
            caps += Triple(capForFraction(ks, f), "low_power", "low-power mode allows k <= ${fmt(f)} x $kMax")
        }
        if (inp.thermal != null) {
            val f = policy.thermalMaxKFraction.getValue(inp.thermal)
            caps += Triple(capForFraction(ks, f), "thermal", "thermal state '${inp.thermal}' allows k <= ${fmt(f)} x $kMax")
        }
        val bandName: String
        if (inp.charging) {
            bandName = "charging"
            val f = policy.chargingMaxKFraction
            caps += Triple(capForFraction(ks, f), "battery", "charging allows k <= ${fmt(f)} x $kMax")
        } else {
            val band = policy.bandFor(percent)
            bandName = band.name
            caps += Triple(
                capForFraction(ks, band.maxKFraction), "battery",
                "battery ${fmt(percent)}% is in band '${band.name}' (>= ${fmt(band.minPercent)}%), which allows k <= ${fmt(band.maxKFraction)} x $kMax",
            )
        }
        var capK = kMax
        var limit = "none"
        val why = mutableListOf<String>()
        for ((c, code, text) in caps) {
            if (c < capK) {
                capK = c
                limit = code
            }
            why += "$text -> $c"
        }
        val capMs = table.options.filter { it.k == capK }.maxOf { it.p90Ms }
        var allowed = table.candidates.filter { it.k <= capK || (it.p90Ms > 0.0 && it.p90Ms <= capMs) }
        if (allowed.isEmpty()) {
            val k0 = table.candidates.minOf { it.k }
            allowed = table.candidates.filter { it.k == k0 }
        }
        if (table.several && capK < kMax) why += "a larger k is allowed at a p90 within k=$capK's ${ms(capMs)} ms"
        val top = table.ranking.best(allowed)
        val pick: PolicyOption
        val fits: Boolean?
        if (budget == null) {
            pick = top
            fits = null
            why += "no latency budget"
        } else {
            val fitting = allowed.filter { it.p90Ms <= budget }
            if (fitting.isNotEmpty()) {
                pick = table.ranking.best(fitting)
                fits = true
                if (pick != top) {
                    limit = "budget"
                    why += "${table.label(top)} p90 ${ms(top.p90Ms)} ms exceeds the ${fmt(budget)} ms budget"
                }
                why += "${table.label(pick)} p90 ${ms(pick.p90Ms)} ms fits the ${fmt(budget)} ms budget"
            } else {
                pick = Ranking.smallestFastest(allowed)
                fits = false
                limit = "budget"
                val what = if (table.several) "option" else "k"
                val how = if (table.several) " at its fastest precision" else ""
                why += "no $what fits the ${fmt(budget)} ms budget (${table.label(pick)} p90 ${ms(pick.p90Ms)} ms): using the smallest k$how"
            }
        }
        if (table.several && budget == null) why += "${table.label(pick)} ranks highest"
        val d = Decision(
            k = pick.k, limit = limit, reason = why.joinToString("; "), capK = capK, band = bandName, batteryPercent = percent,
            budgetMs = budget, p90Ms = pick.p90Ms, fitsBudget = fits, precision = pick.precision, top1 = pick.top1, capMs = capMs,
        )
        return PolicyChoice(d, pick, allowed)
    }

    /** Pick k from [latency] (k -> p90 ms: every k at fp32) under [policy] for [inputs]; see the file comment. */
    fun decide(latency: Map<Int, Double>, policy: PolicyConfig, inputs: PolicyInput, previousK: Int? = null): Decision =
        decide(Options.of(latency), policy, inputs, previousK?.let { OptionRef(it) })

    /** Pick an option from [options] under [policy] for [inputs]; [previous]: the option in use. */
    fun decide(options: List<PolicyOption>, policy: PolicyConfig, inputs: PolicyInput, previous: OptionRef? = null): Decision =
        decide(OptionTable(options), policy, inputs, previous)

    internal fun decide(table: OptionTable, policy: PolicyConfig, inputs: PolicyInput, previous: OptionRef?): Decision {
        val inp = inputs.checked()
        val prev = previous?.resolve(table.candidates)
        val c = decidePower(table, policy, inp, previous, prev)
        val mat = inp.materialized
        val age = inp.coldSwitchAgeS
        val interval = policy.coldSwitchMinIntervalS
        if (mat == null || prev == null || interval <= 0.0 || age == null || age >= interval) return c.decision
        val resident = mat.mapNotNull { it.resolve(table.candidates)?.ref }.toSet()
        if (prev.ref !in resident || c.option.ref in resident || !table.ranking.above(c.option, prev) || !c.eligible(prev)) {
            return c.decision
        }
        val reason = "${c.decision.reason}; switch cost: ${table.label(c.option)} is not materialised and the last cold switch was " +
            "${fmt(age)} s ago (< ${fmt(interval)} s): staying at ${table.label(prev)}"
        return c.holding(prev, "switch_cost", reason).decision
    }

    /** Rules 1-3 (caps, budget, hysteresis) for checked inputs; [prev]: the previous option among the candidates. */
    private fun decidePower(table: OptionTable, policy: PolicyConfig, inp: PolicyInput, ref: OptionRef?, prev: PolicyOption?): PolicyChoice {
        val budget = inp.budgetMs ?: policy.budgetMs
        val unknown = inp.battery == null
        val percent = inp.battery ?: policy.unknownBatteryPercent
        val now = choose(table, policy, inp, percent, budget)
        val prefix = if (unknown && !inp.charging) "battery unknown, treated as ${fmt(percent)}%; " else ""
        if (ref != null && prev == null) {
            val where = if (ref.resolve(table.options) != null) "is off the frontier" else "is not in the table"
            return now.explained(prefix + now.decision.reason + "; previous ${ref.text()} $where, ignored")
        }
        if (prev == null || unknown || inp.charging || policy.hysteresisPercent <= 0.0 || !table.ranking.above(now.option, prev)) {
            return now.explained(prefix + now.decision.reason)
        }
        val low = choose(table, policy, inp, maxOf(0.0, percent - policy.hysteresisPercent), budget).option
        val held = if (now.eligible(prev) && table.ranking.above(prev, low)) prev else low
        if (!table.ranking.above(now.option, held)) return now.explained(prefix + now.decision.reason)
        val reason = "${now.decision.reason}; hysteresis: staying at ${table.label(held)} (previous ${table.label(prev)}) " +
            "until the battery is ${fmt(policy.hysteresisPercent)}% above the band edge"
        return now.holding(held, "hysteresis", prefix + reason)
    }
}

/** Remembers the previous option for hysteresis; one per running model. */
class PolicyState(options: List<PolicyOption>, val policy: PolicyConfig, var previous: OptionRef? = null) {
    private val table = OptionTable(options)
    val options: List<PolicyOption> get() = table.options
    /** k -> p90 ms of each k's default option (fp32, else its first precision): the old table form. */
    val latency: Map<Int, Double> = Options.defaultLatency(table.options).toSortedMap()
    var last: Decision? = null
        private set

    /** The old form: every k of [latency] at fp32. */
    constructor(latency: Map<Int, Double>, policy: PolicyConfig, previousK: Int? = null) :
        this(Options.of(latency), policy, previousK?.let { OptionRef(it) })

    /** The k of the previous option; setting it names k at fp32, else k's first precision. */
    var previousK: Int?
        get() = previous?.k
        set(value) {
            previous = value?.let { OptionRef(it) }
        }

    fun update(inputs: PolicyInput): Decision {
        val d = Policy.decide(table, policy, inputs, previous)
        previous = OptionRef(d.k, d.precision)
        last = d
        return d
    }

    fun reset() {
        previous = null
        last = null
    }
}

package org.hydravit.edge.policy

import org.json.JSONArray
import org.json.JSONObject

/**
 * The battery/thermal policy that picks a head count k, ported from `hydravit_edge/policy.py`.
 *
 * Same rule, same thresholds (fields of the LUT's `policy` section), same vectors
 * (`tests/policy_vectors.json`):
 *  1. caps: low-power mode, thermal state, and charging or the battery band each cap k at
 *     `fraction x kMax` (the smallest k is always allowed); the tightest wins, ties reported
 *     in the order low_power, thermal, battery;
 *  2. budget: the largest k up to the cap whose p90 latency is within the budget, else the smallest k;
 *  3. hysteresis: `k = max(choice(battery - h), min(previousK, choice(battery)))`, not while
 *     charging or with an unknown battery.
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
    /** The k whose sessions are built now (null: every k resident, or unknown). */
    val materialized: Set<Int>? = null,
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
        /** From the vectors' JSON form: battery, charging, low_power, thermal, budget_ms (all optional). */
        fun fromJson(obj: JSONObject): PolicyInput = PolicyInput(
            battery = if (obj.isNull("battery")) null else obj.getDouble("battery"),
            charging = obj.optBoolean("charging", false),
            lowPower = obj.optBoolean("low_power", false),
            thermal = if (obj.isNull("thermal")) null else obj.getString("thermal"),
            budgetMs = if (obj.isNull("budget_ms")) null else obj.getDouble("budget_ms"),
            materialized = obj.optJSONArray("materialized")?.let { arr ->
                (0 until arr.length()).map { i ->
                    arr.opt(i) as? Int ?: throw PolicyException("invalid_switch_state", "materialized must be a list of head counts")
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
)

internal fun fmt(x: Double): String =
    if (x == Math.rint(x) && kotlin.math.abs(x) < 1e15) x.toLong().toString() else x.toString()

object Policy {
    /** Largest k in [ks] with k <= fraction * max(ks); the smallest k when none is. */
    fun capForFraction(ks: List<Int>, fraction: Double): Int {
        val limit = fraction * ks.max() + EPS
        return ks.filter { it <= limit }.maxOrNull() ?: ks.min()
    }

    private fun choose(latency: Map<Int, Double>, policy: PolicyConfig, inp: PolicyInput, percent: Double, budget: Double?): Decision {
        val ks = latency.keys.sorted()
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
        val k: Int
        val fits: Boolean?
        if (budget == null) {
            k = capK
            fits = null
            why += "no latency budget"
        } else {
            val fitting = ks.filter { it <= capK && latency.getValue(it) <= budget }
            if (fitting.isNotEmpty()) {
                k = fitting.max()
                fits = true
                if (k < capK) {
                    limit = "budget"
                    why += "k=$capK p90 ${latency.getValue(capK)} ms exceeds the ${fmt(budget)} ms budget"
                }
                why += "k=$k p90 ${latency.getValue(k)} ms fits the ${fmt(budget)} ms budget"
            } else {
                k = ks.first()
                fits = false
                limit = "budget"
                why += "no k fits the ${fmt(budget)} ms budget: using the smallest k"
            }
        }
        return Decision(k, limit, why.joinToString("; "), capK, bandName, percent, budget, latency.getValue(k), fits)
    }

    /** Pick k from [latency] (k -> p90 ms) under [policy] for [inputs]; see the file comment. */
    fun decide(latency: Map<Int, Double>, policy: PolicyConfig, inputs: PolicyInput, previousK: Int? = null): Decision {
        if (latency.isEmpty()) throw PolicyException("empty_table", "the lookup table has no rows for this device")
        val inp = inputs.checked()
        val d = decidePower(latency, policy, inp, previousK)
        val mat = inp.materialized
        val age = inp.coldSwitchAgeS
        if (mat == null || previousK == null || previousK !in latency || previousK !in mat || d.k in mat ||
            d.k <= previousK || policy.coldSwitchMinIntervalS <= 0.0 || age == null || age >= policy.coldSwitchMinIntervalS
        ) {
            return d
        }
        val reason = "${d.reason}; switch cost: k=${d.k} is not materialised and the last cold switch was ${fmt(age)} s ago " +
            "(< ${fmt(policy.coldSwitchMinIntervalS)} s): staying at k=$previousK"
        return d.copy(
            k = previousK, limit = "switch_cost", reason = reason, p90Ms = latency.getValue(previousK),
            fitsBudget = d.budgetMs?.let { latency.getValue(previousK) <= it }, held = true,
        )
    }

    /** Rules 1-3 (caps, budget, hysteresis) for checked inputs. */
    private fun decidePower(latency: Map<Int, Double>, policy: PolicyConfig, inp: PolicyInput, previousK: Int?): Decision {
        val budget = inp.budgetMs ?: policy.budgetMs
        val unknown = inp.battery == null
        val percent = inp.battery ?: policy.unknownBatteryPercent
        val now = choose(latency, policy, inp, percent, budget)
        val prefix = if (unknown && !inp.charging) "battery unknown, treated as ${fmt(percent)}%; " else ""
        if (previousK != null && previousK !in latency) {
            return now.copy(reason = prefix + now.reason + "; previous k=$previousK is not in the table, ignored")
        }
        if (previousK == null || unknown || inp.charging || policy.hysteresisPercent <= 0.0 || previousK >= now.k) {
            return now.copy(reason = prefix + now.reason)
        }
        val conservative = choose(latency, policy, inp, maxOf(0.0, percent - policy.hysteresisPercent), budget)
        val k = maxOf(conservative.k, minOf(previousK, now.k))
        if (k == now.k) return now.copy(reason = prefix + now.reason)
        val reason = "${now.reason}; hysteresis: staying at k=$k (previous k=$previousK) until the battery is " +
            "${fmt(policy.hysteresisPercent)}% above the band edge"
        return now.copy(
            k = k, limit = "hysteresis", reason = prefix + reason, p90Ms = latency.getValue(k),
            fitsBudget = budget?.let { latency.getValue(k) <= it }, held = true,
        )
    }
}

/** Remembers the previous k for hysteresis; one per running model. */
class PolicyState(latency: Map<Int, Double>, val policy: PolicyConfig, var previousK: Int? = null) {
    val latency: Map<Int, Double> = latency.toSortedMap()
    var last: Decision? = null
        private set

    init {
        if (latency.isEmpty()) throw PolicyException("empty_table", "the lookup table has no rows for this device")
    }

    fun update(inputs: PolicyInput): Decision {
        val d = Policy.decide(latency, policy, inputs, previousK)
        previousK = d.k
        last = d
        return d
    }

    fun reset() {
        previousK = null
        last = null
    }
}

package org.hydravit.edge.policy

import org.json.JSONException
import org.json.JSONObject

/**
 * Reader for `lut.json` (schema: `hydravit_edge/schemas/lut.schema.json`), ported from
 * `hydravit_edge/contract/lut.py`: device lookup (exact, case-insensitive, then file-name form),
 * the effective policy (table-wide `policy` overlaid with a device's `policy` overrides) and the
 * rows as (k, precision) options (a row's precision: its own, else its entry's, else fp32).
 */

const val LUT_FORMAT = "hydravit-edge-lut"
const val LUT_SCHEMA_VERSION = 1

/** One row the policy reads, plus what the app shows. */
data class LutRow(
    val k: Int, val p90Ms: Double, val latencyBasis: String, val medianMs: Double?, val peakRssMb: Double?,
    /** Steady anonymous resident memory with this k active (what the memory budget counts). */
    val rssAnonMb: Double? = null,
    /** Cold switch: building this k's session when it is not materialised. */
    val coldSwitchMs: Double? = null,
    /** The row's precision: its own, else its entry's, else fp32. */
    val precision: String = "fp32",
    val top1: Double? = null,
    val macs: Long? = null,
    /** On the entry's accuracy/latency frontier (null: the LUT does not say; a candidate). */
    val frontier: Boolean? = null,
) {
    val option: PolicyOption get() = PolicyOption(k, precision, p90Ms, top1, macs, frontier != false)
}

class LutDevice(val entry: JSONObject, val policy: PolicyConfig) {
    val name: String get() = entry.getString("name")
    val backend: String get() = entry.getString("backend")
    val mode: String? get() = if (entry.isNull("mode")) null else entry.getString("mode")
    val rows: List<LutRow> = run {
        val arr = entry.getJSONArray("rows")
        val entryPrecision = if (entry.isNull("precision")) "fp32" else entry.getString("precision")
        (0 until arr.length()).map { i ->
            val r = arr.getJSONObject(i)
            LutRow(
                k = r.getInt("k"),
                p90Ms = r.getDouble("p90_ms"),
                latencyBasis = r.getString("latency_basis"),
                medianMs = if (r.isNull("median_ms")) null else r.getDouble("median_ms"),
                peakRssMb = if (r.isNull("peak_rss_mb")) null else r.getDouble("peak_rss_mb"),
                rssAnonMb = if (r.isNull("rss_anon_mb")) null else r.getDouble("rss_anon_mb"),
                coldSwitchMs = if (r.isNull("cold_switch_ms")) null else r.getDouble("cold_switch_ms"),
                precision = if (r.isNull("precision")) entryPrecision else r.getString("precision"),
                top1 = if (r.isNull("top1")) null else r.getDouble("top1"),
                macs = if (r.isNull("macs")) null else r.getLong("macs"),
                frontier = if (r.isNull("frontier")) null else r.getBoolean("frontier"),
            )
        }.sortedWith(compareBy({ it.k }, { precisionIndex(it.precision) }, { unknownName(it.precision) }))
    }

    /** Most resident memory the materialised k may take together here (null: the app's default). */
    val memoryBudgetMb: Double? get() = if (entry.isNull("memory_budget_mb")) null else entry.getDouble("memory_budget_mb")

    /**
     * The rows as the policy's options: those whose steady memory fits [memoryBudgetMb] (the
     * smallest k's rows always stay), each a candidate unless the LUT marks it off the frontier.
     */
    val options: List<PolicyOption> = run {
        val budget = memoryBudgetMb
        val smallest = rows.minOf { it.k }
        rows.filter { budget == null || it.rssAnonMb == null || it.rssAnonMb <= budget || it.k == smallest }.map { it.option }
    }

    /** k -> p90 ms of each k's default row (fp32, else its first precision) among [options]. */
    val latency: Map<Int, Double> = Options.defaultLatency(options)
    val ks: List<Int> get() = rows.map { it.k }.distinct()
    val precisions: List<String> get() = rows.sortedWith(compareBy({ precisionIndex(it.precision) }, { unknownName(it.precision) }))
        .map { it.precision }.distinct()

    fun decide(inputs: PolicyInput, previous: OptionRef? = null): Decision = Policy.decide(options, policy, inputs, previous)

    fun decide(inputs: PolicyInput, previousK: Int): Decision = decide(inputs, OptionRef(previousK))

    fun state(previous: OptionRef? = null): PolicyState = PolicyState(options, policy, previous)

    /**
     * The policy over the (k, precision) options the app can run ([available]: what the bundled export
     * holds for its backend), as the Python runtime builds it: the LUT's rows among them; with no row of
     * their precisions, each available option takes the latency of its k's default row ([RunnableState.standIn]).
     * Throws PolicyException("no_common_k") when the LUT has none of their k.
     */
    fun stateFor(available: Collection<OptionRef>, previous: OptionRef? = null): RunnableState {
        val wanted = available.map { OptionRef(it.k, it.precision ?: "fp32") }.toSet()
        val own = options.filter { it.ref in wanted }
        if (own.isNotEmpty()) return RunnableState(PolicyState(own, policy, previous), false)
        val standIn = wanted.filter { it.k in latency }.sortedWith(compareBy({ it.k }, { precisionIndex(it.precision!!) }))
            .map { PolicyOption(it.k, it.precision!!, latency.getValue(it.k)) }
        if (standIn.isEmpty()) {
            throw PolicyException("no_common_k", "the LUT rows of device '$name' cover k $ks, the app can run " +
                "${wanted.map { it.k }.distinct().sorted()}: none in common")
        }
        return RunnableState(PolicyState(standIn, policy, previous), true)
    }

    fun state(previousK: Int): PolicyState = state(OptionRef(previousK))
}

/** A policy over the options an app can run; [standIn]: the LUT has no row of their precisions (its k's latencies stand in). */
data class RunnableState(val state: PolicyState, val standIn: Boolean)

class Lut(val json: JSONObject) {
    val devices: List<JSONObject>
    val policyJson: JSONObject
    val policy: PolicyConfig

    init {
        if (json.optString("format") != LUT_FORMAT) {
            throw PolicyException("invalid_lut", "not a hydravit-edge lookup table (format '${json.optString("format")}')")
        }
        if (json.optInt("schema_version", -1) != LUT_SCHEMA_VERSION) {
            throw PolicyException("invalid_lut", "LUT schema_version ${json.opt("schema_version")} is not supported (reads $LUT_SCHEMA_VERSION)")
        }
        policyJson = json.getJSONObject("policy")
        policy = PolicyConfig.fromJson(policyJson)
        val arr = json.getJSONArray("devices")
        devices = (0 until arr.length()).map { arr.getJSONObject(it) }
        if (devices.isEmpty()) throw PolicyException("invalid_lut", "the LUT has no devices")
    }

    fun deviceNames(): List<String> = devices.map { it.getString("name") }.distinct()

    /** The entry for [name]; the first one unless [backend]. Throws PolicyException("unknown_device"). */
    fun device(name: String, backend: String? = null): LutDevice {
        val found = matchName(name, deviceNames())
            ?: throw PolicyException("unknown_device", "the LUT has no device '$name'; it has: ${deviceNames().joinToString(", ")}")
        var entries = devices.filter { it.getString("name") == found }
        if (backend != null) {
            entries = entries.filter { it.getString("backend") == backend }
            if (entries.isEmpty()) throw PolicyException("unknown_device", "the LUT has no '$backend' rows for device '$found'")
        }
        val entry = entries.first()
        val merged = JSONObject(policyJson.toString())
        entry.optJSONObject("policy")?.let { over ->
            for (key in over.keys()) merged.put(key, over.get(key))
        }
        return LutDevice(entry, PolicyConfig.fromJson(merged))
    }

    companion object {
        fun parse(text: String): Lut = try {
            Lut(JSONObject(text))
        } catch (e: JSONException) {
            throw PolicyException("invalid_lut", "lut.json is not valid JSON or lacks a field: ${e.message}")
        }

        /** File-name form of a device name (as `reports/<name>.json`), lower-cased for matching. */
        fun slug(name: String): String =
            name.trim().replace(Regex("[^A-Za-z0-9._-]+"), "-").trim('-', '.').lowercase()

        /** Exact, else case-insensitive, else by [slug]. */
        fun matchName(wanted: String, names: List<String>): String? =
            names.firstOrNull { it == wanted }
                ?: names.firstOrNull { it.lowercase() == wanted.lowercase() }
                ?: names.firstOrNull { slug(it) == slug(wanted) }
    }
}

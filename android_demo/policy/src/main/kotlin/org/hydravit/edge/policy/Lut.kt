package org.hydravit.edge.policy

import org.json.JSONException
import org.json.JSONObject

/**
 * Reader for `lut.json` (schema: `hydravit_edge/schemas/lut.schema.json`), ported from
 * `hydravit_edge/lut.py`: device lookup (exact, case-insensitive, then file-name form) and the
 * effective policy (table-wide `policy` overlaid with a device's `policy` overrides).
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
)

class LutDevice(val entry: JSONObject, val policy: PolicyConfig) {
    val name: String get() = entry.getString("name")
    val backend: String get() = entry.getString("backend")
    val mode: String? get() = if (entry.isNull("mode")) null else entry.getString("mode")
    val rows: List<LutRow> = run {
        val arr = entry.getJSONArray("rows")
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
            )
        }.sortedBy { it.k }
    }

    /** Most resident memory the materialised k may take together here (null: the app's default). */
    val memoryBudgetMb: Double? get() = if (entry.isNull("memory_budget_mb")) null else entry.getDouble("memory_budget_mb")

    /**
     * k -> p90 ms, what the policy compares with the budget: the k whose steady memory fits
     * [memoryBudgetMb] (the smallest k always stays).
     */
    val latency: Map<Int, Double> = run {
        val budget = memoryBudgetMb
        val smallest = rows.minOf { it.k }
        rows.filter { budget == null || it.rssAnonMb == null || it.rssAnonMb <= budget || it.k == smallest }
            .associate { it.k to it.p90Ms }
    }
    val ks: List<Int> get() = rows.map { it.k }

    fun decide(inputs: PolicyInput, previousK: Int? = null): Decision = Policy.decide(latency, policy, inputs, previousK)

    fun state(previousK: Int? = null): PolicyState = PolicyState(latency, policy, previousK)
}

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

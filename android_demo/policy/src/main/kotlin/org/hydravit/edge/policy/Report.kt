package org.hydravit.edge.policy

import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.security.MessageDigest
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone

/**
 * Benchmark reports in the harness's schema (`bench/schemas/report.schema.json`, version 1),
 * written by the app's benchmark mode and read by `hydravit-edge bench import` / `bench android`.
 *
 * Note Android's org.json drops a key on `put(key, null)`: nullable fields are written as
 * [JSONObject.NULL] so the report states "not measured" explicitly.
 */

const val REPORT_SCHEMA_VERSION = 1

object Stats {
    /** q-th percentile (0..100), linear interpolation between order statistics (numpy's default method, "linear", as bench/stats.py uses). */
    fun percentile(values: List<Double>, q: Double): Double {
        require(values.isNotEmpty()) { "percentile of no values" }
        require(q in 0.0..100.0) { "q must be in 0..100" }
        val a = values.sorted()
        val pos = (a.size - 1) * q / 100.0
        val lo = kotlin.math.floor(pos).toInt()
        val hi = minOf(lo + 1, a.size - 1)
        return a[lo] + (a[hi] - a[lo]) * (pos - lo)
    }
}

data class LatencyStats(val medianMs: Double, val p90Ms: Double, val minMs: Double, val runs: Int) {
    companion object {
        fun of(samplesMs: List<Double>): LatencyStats = LatencyStats(
            Stats.percentile(samplesMs, 50.0), Stats.percentile(samplesMs, 90.0), samplesMs.min(), samplesMs.size,
        )
    }
}

/** The report's `device` section. [platform] is "android" or "ios" for the apps. */
data class DeviceInfo(
    val name: String,
    val platform: String,
    val manufacturer: String? = null,
    val model: String? = null,
    val os: String? = null,
    val cpu: String? = null,
    val cpuCores: Int? = null,
    val gpu: String? = null,
    val memoryMb: Double? = null,
    val runtimes: Map<String, String> = emptyMap(),
) {
    fun toJson(): JSONObject = JSONObject()
        .put("name", name)
        .put("platform", platform)
        .put("manufacturer", manufacturer.orNull())
        .put("model", model.orNull())
        .put("os", os.orNull())
        .put("cpu", cpu.orNull())
        .put("cpu_cores", cpuCores.orNull())
        .put("gpu", gpu.orNull())
        .put("memory_mb", memoryMb.orNull())
        .put("runtimes", JSONObject().apply { runtimes.forEach { (k, v) -> put(k, v) } })
}

/** One k on one runtime configuration (a row of the report). */
data class ReportRow(
    val k: Int,
    val backend: String,
    val artifact: String,
    val target: String? = null,
    val mode: String? = null,
    val entry: String? = null,
    val compute: String? = null,
    val precision: String? = "fp32",
    val threads: Int? = null,
    val latency: LatencyStats? = null,
    val throughputBatch: Int? = null,
    val throughputPerS: Double? = null,
    val loadMs: Double? = null,
    val switchMs: Double? = null,
    val peakRssMb: Double? = null,
    val fileBytes: Long? = null,
    val params: Long? = null,
    val macs: Long? = null,
    val paperRamMb: Double? = null,
    val notes: List<String> = emptyList(),
) {
    init {
        require(latency != null || throughputPerS != null) { "a row needs a latency or a throughput" }
    }

    fun toJson(): JSONObject = JSONObject()
        .put("k", k)
        .put("backend", backend)
        .put("target", target.orNull())
        .put("mode", mode.orNull())
        .put("artifact", artifact)
        .put("entry", entry.orNull())
        .put("compute", compute.orNull())
        .put("precision", precision.orNull())
        .put("threads", threads.orNull())
        .put("runs", latency?.runs.orNull())
        .put("latency_median_ms", latency?.medianMs?.round4().orNull())
        .put("latency_p90_ms", latency?.p90Ms?.round4().orNull())
        .put("latency_min_ms", latency?.minMs?.round4().orNull())
        .put("throughput_batch", throughputBatch.orNull())
        .put("throughput_per_s", throughputPerS.orNull())
        .put("load_ms", loadMs?.round4().orNull())
        .put("switch_ms", switchMs?.let { maxOf(0.0, it).round4() }.orNull())
        .put("peak_rss_mb", peakRssMb.orNull())
        .put("file_bytes", fileBytes.orNull())
        .put("params", params.orNull())
        .put("macs", macs.orNull())
        .put("paper_ram_mb", paperRamMb.orNull())
        .put("notes", JSONArray(notes))
}

class ReportBuilder(
    val device: DeviceInfo,
    val manifestSha256: String?,
    val toolName: String,
    val toolVersion: String,
    val settings: Map<String, Any?> = emptyMap(),
    val model: JSONObject? = null,
) {
    private val rows = mutableListOf<ReportRow>()
    val size: Int get() = rows.size

    /** Adds [row], replacing a row with the same k and configuration. */
    fun add(row: ReportRow) {
        rows.removeAll {
            it.k == row.k && it.backend == row.backend && it.mode == row.mode && it.compute == row.compute &&
                it.precision == row.precision
        }
        rows += row
    }

    fun toJson(created: Date = Date()): JSONObject {
        val fmt = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'Z'", Locale.US).apply { timeZone = TimeZone.getTimeZone("UTC") }
        val json = JSONObject()
            .put("schema_version", REPORT_SCHEMA_VERSION)
            .put("source", "measured")
            .put("created", fmt.format(created))
            .put("tool", JSONObject().put("name", toolName).put("version", toolVersion))
            .put("manifest_sha256", manifestSha256.orNull())
            .put("device", device.toJson())
            .put("settings", JSONObject().apply { settings.forEach { (k, v) -> put(k, v.orNull()) } })
            .put("rows", JSONArray().apply { rows.sortedWith(compareBy({ it.backend }, { it.k })).forEach { put(it.toJson()) } })
        if (model != null) json.put("model", model)
        return json
    }

    /** Write atomically: a temporary file in the same folder, then a rename. */
    fun write(file: File, created: Date = Date()): File {
        file.parentFile?.mkdirs()
        val tmp = File(file.parentFile, ".${file.name}.tmp")
        tmp.writeText(toJson(created).toString(2) + "\n")
        if (!tmp.renameTo(file)) {
            file.delete()
            check(tmp.renameTo(file)) { "cannot move $tmp to $file" }
        }
        return file
    }
}

fun sha256Hex(bytes: ByteArray): String =
    MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { "%02x".format(it) }

private fun Any?.orNull(): Any = this ?: JSONObject.NULL

private fun Double.round4(): Double = Math.round(this * 10000.0) / 10000.0

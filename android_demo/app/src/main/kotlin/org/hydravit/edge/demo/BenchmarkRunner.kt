package org.hydravit.edge.demo

import android.app.ActivityManager
import android.content.Context
import android.os.Build
import org.hydravit.edge.policy.Contract
import org.hydravit.edge.policy.DeviceInfo
import org.hydravit.edge.policy.ExportManifest
import org.hydravit.edge.policy.LatencyStats
import org.hydravit.edge.policy.ReportBuilder
import org.hydravit.edge.policy.ReportRow
import org.hydravit.edge.policy.sha256Hex
import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import kotlin.random.Random

/**
 * Benchmark mode: every k at every bundled precision of [backend] ([precisions], each opened with
 * [open]), [warmup] untimed then [runs] timed batch-1 runs, written as a report in the harness's
 * schema (one row per k and precision) to the app's external files dir (Contract.REPORT_FILE),
 * where `hydravit-edge bench android` pulls it.
 */
class BenchmarkRunner(
    private val context: Context,
    private val store: AssetStore,
    private val manifest: ExportManifest,
    private val backend: String,
    private val precisions: List<String>,
    private val open: (String) -> InferenceEngine,
    private val runs: Int,
    private val warmup: Int,
    private val progress: (String) -> Unit,
) {
    fun run(): File {
        require(runs >= 1 && warmup >= 0) { "runs must be >= 1 and warmup >= 0" }
        require(precisions.isNotEmpty()) { "no precision to benchmark" }
        val rng = Random(0)
        val input = FloatArray(manifest.inChans * manifest.imgSize * manifest.imgSize) { rng.nextFloat() * 2f - 1f }
        val builder = ReportBuilder(
            device = deviceInfo(),
            manifestSha256 = sha256Hex(store.bytes(Contract.MANIFEST_FILE)),
            toolName = Contract.TOOL_NAME,
            toolVersion = BuildConfig.VERSION_NAME,
            settings = mapOf("threads" to null, "batch" to 1, "runs" to runs, "warmup" to warmup,
                "protocol" to "Android demo app, one process for every k; peak_rss_mb is the process high-water mark so far"),
            model = JSONObject().put("heads", JSONArray(Engines.options(backend, manifest).map { it.k }.distinct().sorted()))
                .put("img_size", manifest.imgSize).put("num_classes", manifest.numClasses),
        )
        for (precision in precisions) {
            val engine = open(precision)  // closes the previous precision's engine
            var previous: Int? = null
            for (k in engine.ks) {
                progress("benchmark ${engine.backend} $precision: k=$k (${engine.ks.indexOf(k) + 1}/${engine.ks.size})")
                engine.prepare(k)  // single artifact: loaded once (load_ms repeats that load); per-k: this k's file
                val loadMs = engine.loadMs
                val first = time { engine.run(input, k) }  // the first run after switching from the previous k
                repeat(maxOf(0, warmup - 1)) { engine.run(input, k) }
                val samples = List(runs) { time { engine.run(input, k) } }
                val stats = LatencyStats.of(samples)
                val rec = engine.record(k)
                builder.add(ReportRow(
                    k = k, backend = engine.backend, artifact = rec.file, target = engine.target, mode = engine.mode,
                    entry = rec.entry, compute = "cpu", precision = engine.precision, latency = stats, loadMs = loadMs,
                    switchMs = if (engine.mode == "single" && previous != null) first - stats.medianMs else null,
                    peakRssMb = peakRssMb(), fileBytes = store.size(rec.file),
                ))
                previous = k
            }
        }
        val out = File(context.getExternalFilesDir(null) ?: context.filesDir, Contract.REPORT_FILE)
        builder.write(out)
        progress("benchmark written: $out")
        return out
    }

    private inline fun time(block: () -> Unit): Double {
        val t0 = System.nanoTime()
        block()
        return (System.nanoTime() - t0) / 1e6
    }

    private fun peakRssMb(): Double? = try {
        File("/proc/self/status").readLines().firstOrNull { it.startsWith("VmHWM:") }
            ?.split(Regex("\\s+"))?.get(1)?.toDouble()?.let { it * 1024.0 / 1e6 }
    } catch (_: Exception) {
        null
    }

    private fun deviceInfo(): DeviceInfo {
        val memory = ActivityManager.MemoryInfo().also {
            context.getSystemService(ActivityManager::class.java).getMemoryInfo(it)
        }
        val soc = if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.S) "${Build.SOC_MANUFACTURER} ${Build.SOC_MODEL}" else Build.HARDWARE
        val version = if (backend == Contract.BACKEND_ONNXRUNTIME) BuildConfig.ONNXRUNTIME_VERSION else BuildConfig.EXECUTORCH_VERSION
        return DeviceInfo(
            name = Build.MODEL,
            platform = "android",
            manufacturer = Build.MANUFACTURER,
            model = Build.MODEL,
            os = "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})",
            cpu = "$soc (${Build.SUPPORTED_ABIS.firstOrNull() ?: "?"})",
            cpuCores = Runtime.getRuntime().availableProcessors(),
            memoryMb = memory.totalMem / 1e6,
            runtimes = mapOf(backend to version),
        )
    }
}

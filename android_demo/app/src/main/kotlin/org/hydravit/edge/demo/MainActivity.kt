package org.hydravit.edge.demo

import android.app.Activity
import android.content.Intent
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.os.Build
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.Spinner
import android.widget.TextView
import org.hydravit.edge.policy.Contract
import org.hydravit.edge.policy.EvalTransform
import org.hydravit.edge.policy.ExportManifest
import org.hydravit.edge.policy.Imaging
import org.hydravit.edge.policy.Lut
import org.hydravit.edge.policy.OptionRef
import org.hydravit.edge.policy.Policy
import org.hydravit.edge.policy.PolicyState
import org.hydravit.edge.policy.Tables
import org.json.JSONObject
import java.io.File
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import kotlin.random.Random

/**
 * The demo: one model, (k, precision) chosen every second from battery/charging/power-save/thermal
 * state through the LUT's policy (or pinned by hand), top-5 of a bundled sample image.  The options
 * are the (k, precision) pairs the bundled export holds for the backend (manifest entries onnx,
 * onnx-int8, ...: Engines.options); one precision's engine is open at a time.
 * Started with `--ez benchmark true [--ei runs N] [--ei warmup W] [--es backend executorch]` it
 * first runs the benchmark and writes the report (see BenchmarkRunner).
 *
 * Everything but the Android calls lives in the tested `policy` module.
 */
class MainActivity : Activity() {
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    private val main = Handler(Looper.getMainLooper())
    private lateinit var power: PowerReader
    private lateinit var store: AssetStore

    private lateinit var powerText: TextView
    private lateinit var decisionText: TextView
    private lateinit var resultText: TextView
    private lateinit var imageView: ImageView
    private lateinit var overrideSpinner: Spinner

    private var manifest: ExportManifest? = null
    private var evalTransform: EvalTransform? = null
    private var backend: String = ""
    /** The open engine and its precision (one at a time: switching precision closes the other). */
    private var engine: InferenceEngine? = null
    private var options: List<OptionRef> = emptyList()
    private var policy: PolicyState? = null
    private var tableNote = ""
    private var samples: List<String> = emptyList()
    private var sampleIndex = 0
    private var input: FloatArray? = null
    private var inputLabel = ""

    @Volatile private var pinned: OptionRef? = null
    @Volatile private var looping = false

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        power = PowerReader(this)
        store = AssetStore(this)
        setContentView(buildLayout())
        worker.execute { load(intent) }
    }

    override fun onNewIntent(intent: Intent) {
        super.onNewIntent(intent)
        setIntent(intent)
        if (intent.getBooleanExtra(Contract.EXTRA_BENCHMARK, false)) worker.execute { benchmark(intent) }
    }

    override fun onResume() {
        super.onResume()
        looping = true
        main.post(tick)
    }

    override fun onPause() {
        looping = false
        main.removeCallbacks(tick)
        super.onPause()
    }

    override fun onDestroy() {
        looping = false
        worker.execute { engine?.close() }
        worker.shutdown()
        super.onDestroy()
    }

    // ------------------------------------------------------------------ loading

    private fun load(intent: Intent) {
        try {
            if (!store.exists(Contract.MANIFEST_FILE)) {
                show(decisionText, "No model bundled. Copy the export and lut.json into app/src/main/assets/" +
                    "${Contract.ASSET_DIR}/ (see android_demo/README.md) and rebuild.")
                return
            }
            val m = ExportManifest.parse(store.text(Contract.MANIFEST_FILE))
            val transform = m.transform  // refuses an interpolation the app does not implement, e.g. nearest
            val backends = Engines.available(m)
            check(backends.isNotEmpty()) { "the bundled export has no ONNX or ExecuTorch artifacts this app can open" }
            backend = intent.getStringExtra(Contract.EXTRA_BACKEND) ?: backends.first()
            options = Engines.options(backend, m)
            check(options.isNotEmpty()) { "the bundled export has no $backend artifacts this app can open" }
            manifest = m
            evalTransform = transform
            var first = defaultOption()
            if (store.exists(Contract.LUT_FILE)) {
                val lut = Lut.parse(store.text(Contract.LUT_FILE))
                val choice = Tables.choose(lut, Build.MODEL, backend, ownReport())
                val runnable = choice.device.stateFor(options)
                policy = runnable.state
                tableNote = "latencies: ${choice.source}" + (if (choice.fallback) " - run benchmark mode for this phone" else "") +
                    if (runnable.standIn) " (no rows of the bundled precisions: its latencies per k stand in)" else ""
                // build the policy's first pick, not a stand-in
                first = Policy.decide(runnable.state.options, runnable.state.policy, power.read()).let { OptionRef(it.k, it.precision) }
            } else {
                tableNote = "no ${Contract.LUT_FILE} bundled: auto uses the largest k"
            }
            val e = engineFor(first.precision ?: "fp32")
            e.prepare(first.k)
            samples = store.list(Contract.SAMPLES_DIR).filter { it.endsWith(".png") || it.endsWith(".jpg") || it.endsWith(".jpeg") }
            nextInput()
            main.post {
                val several = options.map { it.precision }.distinct().size > 1
                val items = listOf("auto (policy)") + options.map { "pin k = ${it.k}" + if (several) " ${it.precision}" else "" }
                overrideSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_item, items).also {
                    it.setDropDownViewResource(android.R.layout.simple_spinner_dropdown_item)
                }
            }
            val loadMs = "%.0f".format(e.loadMs)
            val precisions = options.mapNotNull { it.precision }.distinct().joinToString("/")
            show(decisionText, "loaded ${e.backend} ${e.precision} (${e.mode}, k ${e.ks.first()}..${e.ks.last()}) in $loadMs ms; " +
                "options: $precisions; $tableNote")
            if (intent.getBooleanExtra(Contract.EXTRA_BENCHMARK, false)) benchmark(intent)
        } catch (t: Throwable) {
            show(decisionText, "error: ${t.message ?: t}")
        }
    }

    /** The largest k, at its first precision (fp32 where bundled). */
    private fun defaultOption(): OptionRef = options.filter { it.k == options.maxOf { o -> o.k } }.first()

    /** The engine of [precision], opened on first use; the open engine of another precision is closed first. */
    private fun engineFor(precision: String): InferenceEngine {
        engine?.takeIf { it.precision == precision }?.let { return it }
        engine?.close()
        engine = null
        return Engines.open(backend, store, manifest!!, precision).also { engine = it }
    }

    private fun ownReport(): JSONObject? = try {
        File(getExternalFilesDir(null), Contract.REPORT_FILE).takeIf { it.isFile }?.let { JSONObject(it.readText()) }
    } catch (_: Exception) {
        null
    }

    private fun benchmark(intent: Intent) {
        val m = manifest ?: return
        if (options.isEmpty()) return
        try {
            val runs = intent.getIntExtra(Contract.EXTRA_RUNS, 30)
            val warmup = intent.getIntExtra(Contract.EXTRA_WARMUP, 5)
            val precisions = options.mapNotNull { it.precision }.distinct()
            val out = BenchmarkRunner(this, store, m, backend, precisions, ::engineFor, runs, warmup) { show(resultText, it) }.run()
            val report = JSONObject(out.readText())
            Tables.entryFromReport(report, backend)?.let { entry ->
                if (store.exists(Contract.LUT_FILE)) {
                    val lut = Lut.parse(store.text(Contract.LUT_FILE))
                    policy = org.hydravit.edge.policy.LutDevice(entry, lut.policy).stateFor(options).state
                    tableNote = "latencies: this phone's benchmark"
                }
            }
            show(resultText, "benchmark report: $out\n(pull it with `hydravit-edge bench android`)")
        } catch (t: Throwable) {
            show(resultText, "benchmark failed: ${t.message ?: t}")
        }
    }

    // ------------------------------------------------------------------ the loop

    private val tick = object : Runnable {
        override fun run() {
            if (!looping) return
            worker.execute { step() }
            main.postDelayed(this, 1000)
        }
    }

    private fun step() {
        if (options.isEmpty()) return
        val x = input ?: return
        val inputs = power.read()
        val battery = inputs.battery?.let { "%.0f%%".format(it) } ?: "unknown"
        show(powerText, "battery $battery, ${if (inputs.charging) "charging" else "on battery"}, " +
            "power-save ${if (inputs.lowPower) "on" else "off"}, thermal ${inputs.thermal ?: "unknown"}")
        val decision = try {
            policy?.update(inputs)
        } catch (t: Throwable) {
            show(decisionText, "policy error: ${t.message}")
            null
        }
        val pin = pinned
        val option = pin ?: decision?.let { OptionRef(it.k, it.precision) } ?: defaultOption()
        val k = option.k
        val why = when {
            pin != null -> "pinned by hand"
            decision != null -> "limited by ${decision.limit}: ${decision.reason}"
            else -> tableNote
        }
        val e = try {
            engineFor(option.precision ?: "fp32")
        } catch (t: Throwable) {
            show(decisionText, "cannot open ${option.text()}: ${t.message}")
            return
        }
        val t0 = System.nanoTime()
        val logits = e.run(x, k)
        val ms = (System.nanoTime() - t0) / 1e6
        val labels = manifest?.labels ?: emptyList()
        val top = Imaging.topK(logits, 5).joinToString("\n") { (i, p) ->
            "  %-24s %5.1f%%".format(labels.getOrElse(i) { "class $i" }, 100 * p)
        }
        show(decisionText, "k = $k of ${e.ks.last()}, ${e.precision}  (${e.backend}, ${e.mode})\n$why\n$tableNote")
        show(resultText, "${"%.1f".format(ms)} ms for $inputLabel\ntop-5:\n$top")
    }

    private fun nextInput() {
        val m = manifest ?: return
        val transform = evalTransform ?: return
        val size = transform.crop
        if (samples.isEmpty()) {
            val rng = Random(sampleIndex++)
            input = FloatArray(m.inChans * size * size) { rng.nextFloat() * 2f - 1f }
            inputLabel = "a random input (no samples bundled)"
            main.post { imageView.setImageDrawable(null) }
            return
        }
        val path = samples[sampleIndex++ % samples.size]
        val bytes = store.bytes(path)
        // Decode only: unpremultiplied, so RGB under partial alpha stays as stored (Pillow drops alpha,
        // keeping the colours). The model's own transform (manifest `input`: resize, crop, interpolation,
        // mean/std) runs in the tested policy module, bit-identical to the Python toolkit.
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inPremultiplied = false
        }
        val decoded = BitmapFactory.decodeByteArray(bytes, 0, bytes.size, options)
        if (decoded == null) {
            show(resultText, "cannot decode $path")
            return
        }
        val (w, h) = decoded.width to decoded.height
        val pixels = IntArray(w * h)
        decoded.getPixels(pixels, 0, w, 0, 0, w, h)
        decoded.recycle()
        input = transform.applyArgb(pixels, w, h)
        inputLabel = "${path.substringAfterLast('/')} (${w}x$h, ${transform.describe()})"
        val shown = Bitmap.createBitmap(pixels, w, h, Bitmap.Config.ARGB_8888)  // premultiplied, drawable
        main.post { imageView.setImageBitmap(shown) }
    }

    // ------------------------------------------------------------------ UI

    private fun show(view: TextView, text: String) = main.post { view.text = text }

    private fun buildLayout(): View {
        val pad = (16 * resources.displayMetrics.density).toInt()
        val column = LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            setPadding(pad, pad, pad, pad)
        }
        powerText = TextView(this)
        decisionText = TextView(this).apply { textSize = 18f }
        resultText = TextView(this).apply { typeface = android.graphics.Typeface.MONOSPACE }
        imageView = ImageView(this).apply {
            adjustViewBounds = true
            scaleType = ImageView.ScaleType.FIT_CENTER
            minimumHeight = 6 * pad
        }
        overrideSpinner = Spinner(this).apply {
            onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
                override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                    pinned = if (position == 0) null else options.getOrNull(position - 1)
                    if (pinned == null) worker.execute { policy?.reset() }
                }

                override fun onNothingSelected(parent: AdapterView<*>?) {
                    pinned = null
                }
            }
        }
        val next = Button(this).apply {
            text = "Next image"
            setOnClickListener { worker.execute { nextInput() } }
        }
        listOf(powerText, overrideSpinner, decisionText, imageView, next, resultText).forEach { column.addView(it) }
        return ScrollView(this).apply { addView(column) }
    }
}

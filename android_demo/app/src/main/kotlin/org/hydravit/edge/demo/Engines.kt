package org.hydravit.edge.demo

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import org.hydravit.edge.policy.ArtifactInfo
import org.hydravit.edge.policy.Contract
import org.hydravit.edge.policy.ExportManifest
import org.hydravit.edge.policy.OptionRef
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.nio.FloatBuffer
import java.nio.IntBuffer
import java.nio.LongBuffer

/**
 * One loaded model that runs any exported k at one precision (the manifest entry of its target at
 * that precision: onnx, onnx-int8, ...).  With the single artifact (the default export) the file is
 * loaded once and k is chosen per run; with per-k files the file of k is loaded when k changes.
 */
interface InferenceEngine : AutoCloseable {
    /** Report `backend` (onnxruntime, executorch). */
    val backend: String
    /** Manifest target (onnx, executorch). */
    val target: String
    /** Precision of its artifacts (fp32, fp16, int8, int8-static). */
    val precision: String
    /** "single" or "per-k". */
    val mode: String
    val ks: List<Int>
    /** Time the last load took (the single artifact, or the per-k file of the last prepared k). */
    val loadMs: Double

    fun record(k: Int): ArtifactInfo

    /** Load what k needs (no-op when already loaded). */
    fun prepare(k: Int)

    /** Logits of one image (float32 1 x C x H x W, flattened) with k heads. */
    fun run(input: FloatArray, k: Int): FloatArray
}

abstract class ManifestEngine(manifest: ExportManifest, final override val target: String, final override val precision: String) :
    InferenceEngine {
    private val records: List<ArtifactInfo> = manifest.artifacts(manifest.keyFor(target, precision)).let { all ->
        all.filter { it.mode == "single" }.ifEmpty { all }
    }
    protected val shape = longArrayOf(1, manifest.inChans.toLong(), manifest.imgSize.toLong(), manifest.imgSize.toLong())
    final override val mode: String = records.first().mode
    final override val ks: List<Int> = records.map { it.k }
    override var loadMs: Double = 0.0
        protected set

    override fun record(k: Int): ArtifactInfo =
        records.firstOrNull { it.k == k } ?: throw IllegalArgumentException("k=$k is not exported for $target $precision (have $ks)")

    protected fun <T> timedLoad(block: () -> T): T {
        val t0 = System.nanoTime()
        return block().also { loadMs = (System.nanoTime() - t0) / 1e6 }
    }
}

/**
 * ONNX Runtime. A single artifact with graphs per k (`lazyGraph`) opens the graph of the k in use
 * (one k's weights resident; switching k builds the next one's session, as the Python runtime's
 * lazy mode does); otherwise the single graph takes `image` and `heads` (int64 [1]) per run.
 * Graphs with external weights (`hydravit.onnx.data`) are opened by path, the data file next to them.
 */
class OnnxEngine(private val store: AssetStore, manifest: ExportManifest, precision: String = "fp32", private val threads: Int? = null) :
    ManifestEngine(manifest, Contract.ONNX_TARGET, precision) {
    override val backend = Contract.BACKEND_ONNXRUNTIME
    private val env = OrtEnvironment.getEnvironment()
    private var file: String? = null
    private var session: OrtSession? = null

    override fun prepare(k: Int) {
        val rec = record(k)
        val wanted = rec.lazyGraph ?: rec.file
        if (wanted == file) return
        session?.close()
        session = timedLoad {
            val options = OrtSession.SessionOptions().apply {
                setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT)
                threads?.let { setIntraOpNumThreads(it) }
            }
            val data = rec.externalData
            if (data != null) {
                store.file(data)  // copied out of the APK next to the graph: onnxruntime maps it from there
                env.createSession(store.file(wanted).absolutePath, options)
            } else {
                env.createSession(store.bytes(wanted), options)
            }
        }
        file = wanted
    }

    override fun run(input: FloatArray, k: Int): FloatArray {
        prepare(k)
        val rec = record(k)
        val feeds = LinkedHashMap<String, OnnxTensor>()
        return try {
            feeds[rec.imageInput?.name ?: Contract.ONNX_IMAGE_INPUT] = OnnxTensor.createTensor(env, FloatBuffer.wrap(input), shape)
            rec.headsInput?.takeIf { rec.lazyGraph == null }?.let { spec ->
                val headsShape = if (spec.shape.isEmpty()) longArrayOf() else longArrayOf(1)
                feeds[spec.name] = if (spec.dtype == "int32") {
                    OnnxTensor.createTensor(env, IntBuffer.wrap(intArrayOf(k)), headsShape)
                } else {
                    OnnxTensor.createTensor(env, LongBuffer.wrap(longArrayOf(k.toLong())), headsShape)
                }
            }
            session!!.run(feeds).use { result ->
                @Suppress("UNCHECKED_CAST")
                (result.get(0).value as Array<FloatArray>)[0]
            }
        } finally {
            feeds.values.forEach { it.close() }
        }
    }

    override fun close() {
        session?.close()
        session = null
        file = null
    }
}

/**
 * ExecuTorch: the single .pte has one method per k (forward_k3, ...); per-k files have `forward`.
 * The fp16 / int8 single artifacts ([ArtifactInfo.needsNamedData]) are not opened: k's program loads only with
 * its named data, and ExecuTorch's Android `Module` takes no data file ([Engines.canOpen]).
 */
class ExecuTorchEngine(private val store: AssetStore, manifest: ExportManifest, precision: String = "fp32") :
    ManifestEngine(manifest, Contract.EXECUTORCH_TARGET, precision) {
    override val backend = Contract.BACKEND_EXECUTORCH
    private var file: String? = null
    private var module: Module? = null

    init {
        require(ks.all { Engines.canOpen(Contract.BACKEND_EXECUTORCH, record(it)) }) {
            "the bundled executorch $precision artifact is a single $precision artifact: each k's program needs named data " +
                "cut from hydravit.weights, which ExecuTorch's Android Module cannot load; bundle " +
                "`hydravit-edge export --target executorch --mode per-k --precision $precision` or the onnx $precision artifact"
        }
    }

    override fun prepare(k: Int) {
        val rec = record(k)
        if (rec.file != file) {
            module?.destroy()
            module = timedLoad { Module.load(store.file(rec.file).absolutePath) }
            file = rec.file
        }
    }

    override fun run(input: FloatArray, k: Int): FloatArray {
        prepare(k)
        val method = record(k).entry ?: Contract.EXECUTORCH_PER_K_METHOD
        val outputs = module!!.execute(method, EValue.from(Tensor.fromBlob(input, shape)))
        return outputs[0].toTensor().dataAsFloatArray
    }

    override fun close() {
        module?.destroy()
        module = null
        file = null
    }
}

object Engines {
    private fun targetOf(backend: String): String = when (backend) {
        Contract.BACKEND_ONNXRUNTIME -> Contract.ONNX_TARGET
        Contract.BACKEND_EXECUTORCH -> Contract.EXECUTORCH_TARGET
        else -> throw IllegalArgumentException("unknown backend '$backend' (onnxruntime or executorch)")
    }

    /** Whether [backend] can open [rec] here: ExecuTorch's Android Module takes no named-data file. */
    fun canOpen(backend: String, rec: ArtifactInfo): Boolean = backend != Contract.BACKEND_EXECUTORCH || !rec.needsNamedData

    /** The (k, precision) options [backend] can run from the bundled export, precision order. */
    fun options(backend: String, manifest: ExportManifest): List<OptionRef> =
        manifest.options(targetOf(backend)) { canOpen(backend, it) }

    /** Backends the bundled manifest has artifacts they can open, preferred first. */
    fun available(manifest: ExportManifest): List<String> =
        listOf(Contract.BACKEND_ONNXRUNTIME, Contract.BACKEND_EXECUTORCH).filter { options(it, manifest).isNotEmpty() }

    fun open(backend: String, store: AssetStore, manifest: ExportManifest, precision: String = "fp32"): InferenceEngine = when (backend) {
        Contract.BACKEND_ONNXRUNTIME -> OnnxEngine(store, manifest, precision)
        Contract.BACKEND_EXECUTORCH -> ExecuTorchEngine(store, manifest, precision)
        else -> throw IllegalArgumentException("unknown backend '$backend' (onnxruntime or executorch)")
    }
}

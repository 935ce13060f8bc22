package org.hydravit.edge.policy

import org.json.JSONArray
import org.json.JSONObject

/**
 * Read access to the export's `manifest.json` (export/schemas/manifest.schema.json): model
 * input spec, labels, and per target the artifact records (`file` relative to the manifest,
 * `entry` = ExecuTorch method / Core ML function / TFLite signature, `mode`, inputs).
 * Mirrors the Python reader `hydravit_edge.contract.manifest.Manifest` (the schema is generated from it).
 */

class ManifestException(message: String) : IllegalArgumentException(message)

data class TensorInfo(val name: String, val shape: List<Any>, val dtype: String)

data class ArtifactInfo(
    val k: Int,
    val file: String,
    val entry: String?,
    val entryKind: String,
    val mode: String,
    val inputs: List<TensorInfo>,
    val outputs: List<TensorInfo>,
    /**
     * Single ONNX artifact: the graph of this k alone over the weights the artifact stores once
     * (`extra.lazy_graph`, here relative to the manifest like `file`). A session of it holds one k:
     * what the Python runtime opens by default (`materialize="lazy"`); it has no `heads` input.
     */
    val lazyGraph: String? = null,
    /** The external weights file `file` (and `lazyGraph`) read, relative to the manifest; open such graphs by path. */
    val externalData: String? = null,
    /** The entry's precision (fp32, fp16, int8, int8-static). */
    val precision: String = "fp32",
    /**
     * ExecuTorch single artifacts: k's program (`extra.lazy_data.program`, relative to the manifest) and
     * the weights file its named data (.ptd) is cut from.  Such a program loads only with that data
     * (ExecuTorch's `Module` with a data file), which the Android `Module` API (ExecuTorch 1.5) cannot pass.
     */
    val namedDataProgram: String? = null,
) {
    /**
     * An fp16 / int8 ExecuTorch single artifact: `file` is the shared weights file, not a program, so the
     * record runs only through k's program with its named data ([namedDataProgram]).
     */
    val needsNamedData: Boolean get() = namedDataProgram != null && !file.endsWith(".pte")

    /** The input holding the image (the first float input, normally `image`). */
    val imageInput: TensorInfo?
        get() = inputs.firstOrNull { it.name == Contract.ONNX_IMAGE_INPUT } ?: inputs.firstOrNull { it.dtype.startsWith("float") }

    /** The input selecting k in a single ONNX graph (`heads`), null for other artifacts. */
    val headsInput: TensorInfo?
        get() = inputs.firstOrNull { it.name == Contract.ONNX_HEADS_INPUT }
}

const val MANIFEST_FORMAT = "hydravit-edge-export"
const val MANIFEST_VERSION = 1

class ExportManifest(val json: JSONObject) {
    init {
        if (json.optString("format") != MANIFEST_FORMAT) {
            throw ManifestException("not a hydravit-edge export manifest (format '${json.optString("format")}')")
        }
        if (json.optInt("manifest_version", -1) != MANIFEST_VERSION) {
            throw ManifestException("manifest_version ${json.opt("manifest_version")} is not supported (this app reads $MANIFEST_VERSION)")
        }
    }

    private val model: JSONObject = json.optJSONObject("model") ?: JSONObject()
    private val config: JSONObject = model.optJSONObject("config") ?: model
    private val input: JSONObject = json.optJSONObject("input") ?: JSONObject()
    private val targets: JSONObject = json.optJSONObject("targets")
        ?: throw ManifestException("not a hydravit-edge export manifest (no 'targets')")

    val imgSize: Int
        get() = when {
            input.has("img_size") -> input.getInt("img_size")
            input.optJSONArray("shape") != null -> input.getJSONArray("shape").getInt(input.getJSONArray("shape").length() - 1)
            else -> config.getInt("img_size")
        }

    val inChans: Int
        get() = input.optJSONArray("shape")?.takeIf { it.length() == 4 }?.getInt(1) ?: config.optInt("in_chans", 3)

    val mean: FloatArray get() = floats(input.optJSONArray("mean") ?: config.getJSONArray("mean"))
    val std: FloatArray get() = floats(input.optJSONArray("std") ?: config.getJSONArray("std"))

    /**
     * The model's evaluation transform from `input.resize`, `input.crop`, `input.interpolation`, mean
     * and std (Preprocess.kt); manifests without them: resize = crop = img_size, bilinear.
     */
    val transform: EvalTransform get() = EvalTransform.fromSpec(input, config)
    val numClasses: Int get() = config.getInt("num_classes")

    val labels: List<String>
        get() {
            val arr = json.optJSONArray("labels") ?: config.optJSONArray("labels")
            return if (arr != null) (0 until arr.length()).map { arr.getString(it) } else (0 until numClasses).map { "class $it" }
        }

    fun targetNames(): List<String> = targets.keys().asSequence().toList()

    /** The export target of entry [key] (`onnx-int8` -> `onnx`): its `target`, else the key. */
    fun baseTarget(key: String): String = targets.optJSONObject(key)?.optString("target", "")?.takeIf { it.isNotEmpty() } ?: key

    /** The precision of entry [key] (fp32 when the entry does not say). */
    fun precision(key: String): String = targets.optJSONObject(key)?.let { t ->
        if (t.isNull("precision")) null else t.optString("precision", "").takeIf { it.isNotEmpty() }
    } ?: "fp32"

    /** precision -> entry key of [target]'s artifacts, in [PRECISION_ORDER] (others after, by name). */
    fun variants(target: String): Map<String, String> = targetNames().filter { baseTarget(it) == target }
        .associateBy { precision(it) }
        .toList().sortedWith(compareBy({ precisionIndex(it.first) }, { unknownName(it.first) })).toMap(LinkedHashMap())

    /** The entry key of [target] at [precision]; a [ManifestException] naming the precisions there are. */
    fun keyFor(target: String, precision: String = "fp32"): String = variants(target)[precision]
        ?: throw ManifestException("the export has no $precision '$target' artifacts (precisions there: " +
            "${variants(target).keys.joinToString(", ").ifEmpty { "none" }}; export them with --precision $precision)")

    /**
     * The (k, precision) options of [target] the app can run: every record of each of its precisions
     * that [canOpen] accepts (e.g. not [ArtifactInfo.needsNamedData] where the runtime cannot pass a data file).
     */
    fun options(target: String, canOpen: (ArtifactInfo) -> Boolean = { true }): List<OptionRef> =
        variants(target).values.flatMap { key -> artifacts(key).filter(canOpen).map { OptionRef(it.k, it.precision) } }.distinct()

    /** The records of entry [target] (a key: onnx, onnx-int8, ...), sorted by k. */
    fun artifacts(target: String): List<ArtifactInfo> {
        val t = targets.optJSONObject(target)
            ?: throw ManifestException("the export has no '$target' artifacts (it has: ${targetNames().joinToString(", ")})")
        val arr = t.optJSONArray("artifacts") ?: JSONArray()
        val defaultMode = t.optString("mode", "per-k")
        return (0 until arr.length()).map { i ->
            val r = arr.getJSONObject(i)
            val extra = r.optJSONObject("extra") ?: JSONObject()
            val file = r.getString("file")
            val folder = if (file.contains('/')) file.substringBeforeLast('/') + "/" else ""
            ArtifactInfo(
                k = r.getInt("k"),
                file = file,
                entry = if (r.isNull("entry")) null else r.getString("entry"),
                entryKind = r.optString("entry_kind", "graph"),
                mode = if (r.isNull("mode")) defaultMode else r.getString("mode"),
                inputs = tensors(r.optJSONArray("inputs")),
                outputs = tensors(r.optJSONArray("outputs")),
                lazyGraph = extra.optString("lazy_graph", "").takeIf { it.isNotEmpty() }?.let { folder + it },
                externalData = extra.optString("external_data", "").takeIf { it.isNotEmpty() }?.let { folder + it },
                precision = precision(target),
                namedDataProgram = extra.optJSONObject("lazy_data")?.optString("program", "")
                    ?.takeIf { it.isNotEmpty() }?.let { folder + it },
            )
        }.sortedBy { it.k }
    }

    fun hasTarget(target: String): Boolean = targets.has(target)

    companion object {
        fun parse(text: String): ExportManifest = ExportManifest(JSONObject(text))

        private fun floats(arr: JSONArray): FloatArray = FloatArray(arr.length()) { arr.getDouble(it).toFloat() }

        private fun tensors(arr: JSONArray?): List<TensorInfo> = if (arr == null) emptyList() else (0 until arr.length()).map { i ->
            val t = arr.getJSONObject(i)
            val shape = t.optJSONArray("shape") ?: JSONArray()
            TensorInfo(t.getString("name"), (0 until shape.length()).map { shape.get(it) }, t.optString("dtype", "float32"))
        }
    }
}

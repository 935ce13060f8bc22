package org.hydravit.edge.policy

import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/**
 * Entries per precision (`onnx`, `onnx-int8`, ...), what the app can open of them, and the policy over
 * those options (as `hydravit_edge.runtime.Runtime` builds it: tests/test_runtime.py, test_export_precision.py).
 */
class ManifestPrecisionTest {
    private val manifest = ExportManifest.parse("""
        {"format": "hydravit-edge-export", "manifest_version": 1,
         "model": {"config": {"img_size": 32, "in_chans": 3, "num_classes": 3, "mean": [0.5, 0.5, 0.5],
                              "std": [0.25, 0.25, 0.25]}, "heads": [3, 6]},
         "targets": {
           "onnx": {"target": "onnx", "precision": "fp32", "mode": "single", "artifacts": [
             {"k": 3, "file": "onnx/hydravit.onnx", "mode": "single"}, {"k": 6, "file": "onnx/hydravit.onnx", "mode": "single"}]},
           "onnx-int8": {"target": "onnx", "precision": "int8", "mode": "single", "artifacts": [
             {"k": 6, "file": "onnx-int8/hydravit.onnx", "mode": "single",
              "extra": {"lazy_graph": "hydravit.k6.onnx", "external_data": "hydravit.onnx.data"}},
             {"k": 3, "file": "onnx-int8/hydravit.onnx", "mode": "single",
              "extra": {"lazy_graph": "hydravit.k3.onnx", "external_data": "hydravit.onnx.data"}}]},
           "executorch-int8": {"target": "executorch", "precision": "int8", "mode": "single", "artifacts": [
             {"k": 3, "file": "executorch-int8/hydravit.weights", "entry": "forward", "mode": "single",
              "extra": {"lazy_data": {"program": "hydravit.k3.pte", "weights": "hydravit.weights", "weights_format": "raw"}}}]},
           "executorch-fp16": {"target": "executorch", "precision": "fp16", "mode": "per-k", "artifacts": [
             {"k": 3, "file": "executorch-fp16/k3.pte", "mode": "per-k"}, {"k": 6, "file": "executorch-fp16/k6.pte", "mode": "per-k"}]},
           "executorch": {"mode": "per-k", "artifacts": [{"k": 6, "file": "executorch/k6.pte", "mode": "per-k"}]}
         }}
    """.trimIndent())

    @Test
    fun entriesPerPrecision() {
        assertEquals(mapOf("fp32" to "onnx", "int8" to "onnx-int8"), manifest.variants(Contract.ONNX_TARGET))
        // an entry without target/precision (older manifests) is its key at fp32; the precision order is fixed
        assertEquals(listOf("fp32", "fp16", "int8"), manifest.variants(Contract.EXECUTORCH_TARGET).keys.toList())
        assertEquals("onnx-int8", manifest.keyFor(Contract.ONNX_TARGET, "int8"))
        val e = assertThrows(ManifestException::class.java) { manifest.keyFor(Contract.ONNX_TARGET, "fp16") }
        assertEquals("the export has no fp16 'onnx' artifacts (precisions there: fp32, int8; export them with --precision fp16)", e.message)
        val int8 = manifest.artifacts("onnx-int8")
        assertEquals(listOf(3, 6), int8.map { it.k })
        assertTrue(int8.all { it.precision == "int8" && !it.needsNamedData })
        assertEquals("onnx-int8/hydravit.k3.onnx", int8[0].lazyGraph)
        assertEquals("onnx-int8/hydravit.onnx.data", int8[0].externalData)
        val et = manifest.artifacts("executorch-int8").single()
        assertTrue(et.needsNamedData)
        assertEquals("executorch-int8/hydravit.k3.pte", et.namedDataProgram)
        assertFalse(manifest.artifacts("executorch-fp16").any { it.needsNamedData })
    }

    @Test
    fun optionsTheAppCanOpen() {
        assertEquals(listOf(OptionRef(3, "fp32"), OptionRef(6, "fp32"), OptionRef(3, "int8"), OptionRef(6, "int8")),
            manifest.options(Contract.ONNX_TARGET))
        // Android's ExecuTorch Module takes no data file: the int8 single artifact is left out there
        assertEquals(listOf(OptionRef(6, "fp32"), OptionRef(3, "fp16"), OptionRef(6, "fp16")),
            manifest.options(Contract.EXECUTORCH_TARGET) { !it.needsNamedData })
    }

    private fun device(vararg rows: Triple<Int, String, Double>): LutDevice {
        val lut = JSONObject().put("format", LUT_FORMAT).put("schema_version", LUT_SCHEMA_VERSION)
            .put("policy", JSONObject(vectorsFile().readText()).getJSONObject("luts").getJSONObject("P").getJSONObject("policy"))
            .put("devices", org.json.JSONArray().put(JSONObject().put("name", "phone").put("source", "measured")
                .put("backend", "onnxruntime").put("rows", org.json.JSONArray(rows.map { (k, p, ms) ->
                    JSONObject().put("k", k).put("precision", p).put("p90_ms", ms).put("latency_basis", "p90")
                        .put("top1", 0.5 + 0.05 * k + (if (p == "fp32") 0.001 else 0.0))
                }))))
        return Lut(lut).device("phone", "onnxruntime")
    }

    @Test
    fun thePolicyPicksAmongWhatTheAppRuns() {
        val lut = device(Triple(3, "fp32", 10.0), Triple(6, "fp32", 400.0), Triple(3, "int8", 4.0), Triple(6, "int8", 20.0))
        val everything = lut.stateFor(manifest.options(Contract.ONNX_TARGET))
        assertFalse(everything.standIn)
        val budget = PolicyInput(battery = 100.0, budgetMs = 50.0)
        assertEquals(OptionRef(6, "int8"), everything.state.update(budget).let { OptionRef(it.k, it.precision) })
        // an export without int8: the LUT's int8 rows are not options, k=6 fp32 does not fit 50 ms
        val fp32 = lut.stateFor(listOf(OptionRef(3, "fp32"), OptionRef(6, "fp32")))
        assertEquals(listOf("fp32"), fp32.state.options.map { it.precision }.distinct())
        assertEquals(OptionRef(3, "fp32"), fp32.state.update(budget).let { OptionRef(it.k, it.precision) })
        // no LUT row of the app's precisions: its k's default latencies stand in
        val fp16 = lut.stateFor(listOf(OptionRef(3, "fp16"), OptionRef(6, "fp16")))
        assertTrue(fp16.standIn)
        assertEquals(mapOf(3 to 10.0, 6 to 400.0), fp16.state.options.associate { it.k to it.p90Ms })
        assertEquals(OptionRef(3, "fp16"), fp16.state.update(budget).let { OptionRef(it.k, it.precision) })
        assertEquals("no_common_k", assertThrows(PolicyException::class.java) {
            lut.stateFor(listOf(OptionRef(12, "fp32")))
        }.code)
    }
}

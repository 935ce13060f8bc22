package org.hydravit.edge.policy

import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.Test
import java.io.File

class DeviceTest {
    private val vectors = JSONObject(vectorsFile().readText())
    private val lutA = Lut(vectors.getJSONObject("luts").getJSONObject("A"))

    @Test
    fun powerMapping() {
        assertEquals(35.0, AndroidPower.batteryPercent(35, 100)!!, 1e-12)
        assertEquals(50.0, AndroidPower.batteryPercent(128, 256)!!, 1e-12)
        assertNull(AndroidPower.batteryPercent(-1, 100))
        assertNull(AndroidPower.batteryPercent(50, 0))
        assertTrue(AndroidPower.onPower(AndroidPower.BATTERY_STATUS_CHARGING, 0))
        assertTrue(AndroidPower.onPower(3, 2))
        assertFalse(AndroidPower.onPower(3, 0))
        assertEquals(listOf("nominal", "fair", "serious", "critical", "critical", "critical", "critical"),
            (0..6).map { AndroidPower.thermalState(it) })
        assertNull(AndroidPower.thermalState(null))
        // every mapped state is one the policy knows
        assertTrue((0..6).all { AndroidPower.thermalState(it) in THERMAL_STATES })
    }

    @Test
    fun preprocessAndTopK() {
        val white = 0xFFFFFFFF.toInt()
        val red = 0xFFFF0000.toInt()
        val out = Imaging.chwFromArgb(intArrayOf(white, red, 0xFF000000.toInt(), white), 2,
            floatArrayOf(0.5f, 0.5f, 0.5f), floatArrayOf(0.5f, 0.5f, 0.5f))
        assertArrayEquals(floatArrayOf(1f, 1f, -1f, 1f, 1f, -1f, -1f, 1f, 1f, -1f, -1f, 1f), out, 1e-6f)
        val top = Imaging.topK(floatArrayOf(0f, 3f, 1f, 2f), 2)
        assertEquals(listOf(1, 3), top.map { it.first })
        assertTrue(top[0].second > top[1].second && top[0].second < 1f)
        assertThrows(IllegalArgumentException::class.java) { Imaging.chwFromArgb(IntArray(3), 2, FloatArray(3), FloatArray(3)) }
    }

    @Test
    fun tableChoice() {
        val own = Tables.choose(lutA, "fast-phone", "onnxruntime")
        assertFalse(own.fallback)
        assertEquals(24.0, own.device.latency[12]!!, 1e-12)
        val report = JSONObject().put("device", JSONObject().put("name", "Pixel 9")).put("rows", org.json.JSONArray()
            .put(JSONObject().put("k", 3).put("backend", "onnxruntime").put("latency_p90_ms", 50.0))
            .put(JSONObject().put("k", 6).put("backend", "onnxruntime").put("latency_p90_ms", 90.0))
            .put(JSONObject().put("k", 6).put("backend", "executorch").put("latency_p90_ms", 9.0)))
        val measured = Tables.choose(lutA, "Pixel 9", "onnxruntime", report)
        assertFalse(measured.fallback)
        assertEquals(mapOf(3 to 50.0, 6 to 90.0), measured.device.latency)
        assertEquals(3, measured.device.decide(PolicyInput(battery = 100.0)).k) // nothing fits 33 ms
        val fallback = Tables.choose(lutA, "Pixel 9", "executorch")
        assertTrue(fallback.fallback)
        assertEquals("fast-phone", fallback.device.name)
    }

    /** A manifest.json written by `hydravit-edge export` (single ONNX), given by tests/test_app_contract.py. */
    @Test
    fun realManifest() {
        val path = System.getProperty("hydravit.manifest")
        assumeTrue(path != null, "no -Dhydravit.manifest=PATH given")
        val manifest = ExportManifest.parse(File(path!!).readText())
        val onnx = manifest.artifacts(Contract.ONNX_TARGET)
        assertTrue(onnx.isNotEmpty())
        val variants = manifest.variants(Contract.ONNX_TARGET)
        for ((precision, key) in variants) {  // every precision's records: the same files in the entry's own folder
            for (rec in manifest.artifacts(key)) {
                assertEquals(precision, rec.precision)
                assertEquals("$key/hydravit.onnx", rec.file)
                assertEquals("$key/hydravit.k${rec.k}.onnx", rec.lazyGraph)
                assertEquals("$key/hydravit.onnx.data", rec.externalData)
                assertTrue(File(File(path).parentFile, rec.lazyGraph!!).isFile)
            }
        }
        for (rec in onnx) {
            assertEquals(Contract.ONNX_SINGLE_FILE, rec.file)
            assertEquals("single", rec.mode)
            assertEquals(Contract.ONNX_IMAGE_INPUT, rec.imageInput!!.name)
            assertEquals(Contract.ONNX_HEADS_INPUT, rec.headsInput!!.name)
            assertEquals("int64", rec.headsInput!!.dtype)
            assertEquals(listOf<Any>(1), rec.headsInput!!.shape)
            assertEquals(Contract.ONNX_LOGITS_OUTPUT, rec.outputs.single().name)
            assertEquals("onnx/hydravit.k${rec.k}.onnx", rec.lazyGraph)
            assertEquals("onnx/hydravit.onnx.data", rec.externalData)
            assertTrue(File(File(path).parentFile, rec.lazyGraph!!).isFile)
        }
        assertEquals(manifest.numClasses, manifest.labels.size)
        assertEquals(3, manifest.mean.size)
        assertEquals(3, manifest.inChans)
        assertTrue(manifest.imgSize > 0)
        println("real manifest read: k=${onnx.map { it.k }} img_size=${manifest.imgSize} labels=${manifest.labels.size} " +
            "precisions=${variants.keys} options=${manifest.options(Contract.ONNX_TARGET).map { "${it.k}@${it.precision}" }}")
    }

    @Test
    fun manifestRecords() {
        val manifest = ExportManifest.parse("""
            {"format": "hydravit-edge-export", "manifest_version": 1,
             "model": {"config": {"img_size": 32, "in_chans": 3, "num_classes": 3, "num_heads": 12,
                                  "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "labels": ["a", "b", "c"]},
                       "heads": [3, 6]},
             "targets": {"onnx": {"mode": "single", "artifacts": [
                 {"k": 6, "file": "onnx/hydravit.onnx", "entry": null, "entry_kind": "graph+input", "mode": "single",
                  "inputs": [{"name": "image", "shape": ["batch", 3, 32, 32], "dtype": "float32"},
                             {"name": "heads", "shape": [1], "dtype": "int64"}],
                  "outputs": [{"name": "logits", "shape": ["batch", 3], "dtype": "float32"}]},
                 {"k": 3, "file": "onnx/hydravit.onnx", "entry": null, "entry_kind": "graph+input", "mode": "single",
                  "inputs": [{"name": "image", "shape": ["batch", 3, 32, 32], "dtype": "float32"},
                             {"name": "heads", "shape": [1], "dtype": "int64"}]}]},
                         "executorch": {"artifacts": [
                 {"k": 3, "file": "executorch/hydravit.pte", "entry": "forward_k3", "entry_kind": "method", "mode": "single"}]}}}
        """.trimIndent())
        assertEquals(32, manifest.imgSize)
        assertEquals(listOf("a", "b", "c"), manifest.labels)
        assertArrayEquals(floatArrayOf(0.25f, 0.25f, 0.25f), manifest.std, 0f)
        val onnx = manifest.artifacts("onnx")
        assertEquals(listOf(3, 6), onnx.map { it.k })
        assertEquals(Contract.ONNX_SINGLE_FILE, onnx[0].file)
        assertEquals("heads", onnx[0].headsInput!!.name)
        assertEquals("image", onnx[0].imageInput!!.name)
        assertEquals(Contract.executorchMethod(3), manifest.artifacts("executorch")[0].entry)
        assertEquals(null, onnx[0].lazyGraph)  // an export without graphs per k: the single graph, eager
        assertThrows(ManifestException::class.java) { manifest.artifacts("coreml") }
        assertThrows(ManifestException::class.java) { ExportManifest.parse("{}") }
        assertThrows(ManifestException::class.java) {
            ExportManifest.parse("""{"format": "hydravit-edge-export", "manifest_version": 2, "targets": {}}""")
        }
    }
}

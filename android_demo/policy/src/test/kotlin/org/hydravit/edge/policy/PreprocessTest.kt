package org.hydravit.edge.policy

import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.DynamicTest
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestFactory
import java.io.File
import java.security.MessageDigest
import java.util.Base64
import kotlin.math.abs
import kotlin.math.max

/** Locates the shared vectors: -Dhydravit.transformVectors=PATH, else tests/transform_vectors.json above the working dir. */
internal fun transformVectorsFile(): File {
    System.getProperty("hydravit.transformVectors")?.let { return File(it) }
    var dir: File? = File(System.getProperty("user.dir")).absoluteFile
    while (dir != null) {
        val candidate = File(dir, "tests/transform_vectors.json")
        if (candidate.isFile) return candidate
        dir = dir.parentFile
    }
    error("tests/transform_vectors.json not found above ${System.getProperty("user.dir")}; pass -Dhydravit.transformVectors=PATH")
}

class PreprocessTest {
    private val data = JSONObject(transformVectorsFile().readText())
    private val tolerance = data.getDouble("tolerance")

    private fun sha256(bytes: ByteArray): String =
        MessageDigest.getInstance("SHA-256").digest(bytes).joinToString("") { "%02x".format(it) }

    private fun assertClose(want: Double, got: Double, what: String) =
        assertTrue(abs(got - want) <= tolerance * max(1.0, abs(want)), "$what: expected $want, got $got")

    private fun rgbOf(v: JSONObject) = RgbImage(v.getInt("width"), v.getInt("height"), Base64.getDecoder().decode(v.getString("rgb")))

    /** Checks what the transform makes of one vector's pixels against its `expect` block. */
    private fun check(v: JSONObject, t: EvalTransform, image: RgbImage) {
        val name = v.getString("name")
        val expect = v.getJSONObject("expect")
        val resized = expect.getJSONArray("resized")
        assertEquals(resized.getInt(0) to resized.getInt(1), t.resizedSize(image.width, image.height), "$name: resized size")
        val crop = t.resizeCrop(image)
        assertEquals(t.crop, crop.width, name)
        assertEquals(expect.getString("crop_sha256"), sha256(crop.rgb), "$name: sha256 of the uint8 crop")
        val x = t.apply(image)
        val shape = expect.getJSONArray("shape")
        assertEquals(shape.getInt(0) * shape.getInt(1) * shape.getInt(2), x.size, "$name: tensor size")
        var sum = 0.0
        var sumSq = 0.0
        for (f in x) {
            sum += f.toDouble()
            sumSq += f.toDouble() * f.toDouble()
        }
        assertClose(expect.getDouble("sum"), sum, "$name: sum")
        assertClose(expect.getDouble("sum_sq"), sumSq, "$name: sum of squares")
        val plane = shape.getInt(1) * shape.getInt(2)
        val samples = expect.getJSONArray("samples")
        for (i in 0 until samples.length()) {
            val s = samples.getJSONArray(i)
            val (c, y, xx) = Triple(s.getInt(0), s.getInt(1), s.getInt(2))
            assertClose(s.getDouble(3), x[c * plane + y * shape.getInt(2) + xx].toDouble(), "$name: x[$c, $y, $xx]")
        }
    }

    @TestFactory
    fun sharedVectors(): List<DynamicTest> {
        assertEquals("hydravit-edge-transform-vectors", data.getString("format"))
        val vectors = data.getJSONArray("vectors")
        assertTrue(vectors.length() >= 10, "expected the full vector set")
        return (0 until vectors.length()).map { i ->
            val v = vectors.getJSONObject(i)
            DynamicTest.dynamicTest("transform ${v.getString("name")}") {
                val spec = v.getJSONObject("transform")
                val t = EvalTransform.fromSpec(spec)
                assertEquals(spec.getInt("resize"), t.resize)
                assertEquals(spec.getInt("crop"), t.crop)
                assertEquals(spec.getString("interpolation"), t.interpolation)
                check(v, t, rgbOf(v))
            }
        }
    }

    @Test
    fun argbPixelsDropAlphaLikePillow() {
        val v = data.getJSONArray("vectors").getJSONObject(0)
        val rgb = rgbOf(v)
        val argb = IntArray(rgb.width * rgb.height) { i ->
            val alpha = (i * 37) and 0xFF
            (alpha shl 24) or ((rgb.rgb[3 * i].toInt() and 0xFF) shl 16) or
                ((rgb.rgb[3 * i + 1].toInt() and 0xFF) shl 8) or (rgb.rgb[3 * i + 2].toInt() and 0xFF)
        }
        val t = EvalTransform.fromSpec(v.getJSONObject("transform"))
        check(v, t, RgbImage.fromArgb(argb, rgb.width, rgb.height))
        assertArrayEquals(t.apply(rgb), t.applyArgb(argb, rgb.width, rgb.height))
    }

    @Test
    fun greyExpandsToEqualChannels() {
        val img = RgbImage.fromGrey(byteArrayOf(0, 127, -1, 64), 2, 2)
        assertArrayEquals(byteArrayOf(0, 0, 0, 127, 127, 127, -1, -1, -1, 64, 64, 64), img.rgb)
    }

    @Test
    fun theManifestStatesTheTransform() {
        val spec = data.getJSONArray("vectors").getJSONObject(1).getJSONObject("transform")
        val manifest = JSONObject()
            .put("format", MANIFEST_FORMAT).put("manifest_version", MANIFEST_VERSION)
            .put("model", JSONObject().put("config", JSONObject().put("img_size", spec.getInt("img_size"))
                .put("mean", spec.getJSONArray("mean")).put("std", spec.getJSONArray("std")).put("num_classes", 10)))
            .put("input", JSONObject(spec.toString()).put("shape", JSONArray(listOf(1, 3, spec.getInt("crop"), spec.getInt("crop")))))
            .put("targets", JSONObject())
        val t = ExportManifest(manifest).transform
        assertEquals(spec.getInt("resize") to spec.getInt("crop"), t.resize to t.crop)
        assertEquals(spec.getString("interpolation"), t.interpolation)

        // an older manifest (no resize/crop/interpolation): resize = crop = img_size, bilinear
        val old = JSONObject(manifest.toString())
        old.put("input", JSONObject().put("shape", JSONArray(listOf(1, 3, 28, 28))).put("mean", spec.getJSONArray("mean"))
            .put("std", spec.getJSONArray("std")))
        val legacy = ExportManifest(old).transform
        assertEquals(Triple(28, 28, "bilinear"), Triple(legacy.resize, legacy.crop, legacy.interpolation))
        // only crop_pct: timm's floor(img_size / crop_pct)
        val pct = EvalTransform.fromSpec(JSONObject().put("img_size", 224).put("crop_pct", 0.875).put("interpolation", "bicubic"))
        assertEquals(256 to 224, pct.resize to pct.crop)
    }

    @Test
    fun unsupportedFiltersAndBadPixelsAreRefused() {
        val e = assertThrows(PreprocessException::class.java) {
            EvalTransform(28, 32, "nearest", floatArrayOf(0f, 0f, 0f), floatArrayOf(1f, 1f, 1f))
        }
        assertTrue("nearest" in e.message!! && "bicubic" in e.message!!, e.message)
        assertThrows(PreprocessException::class.java) { ResampleFilter.named("cubicle") }
        assertThrows(PreprocessException::class.java) { RgbImage.fromArgb(IntArray(5), 2, 3) }
        assertThrows(PreprocessException::class.java) { EvalTransform.resizeFor(28, 1.5) }
    }

    @Test
    fun onePassWhenOneSideKeepsItsSize() {
        // a single horizontal pass equals the row-by-row filter of a 1-pixel-high image
        val w = 9
        val rows = (0 until 4).map { y -> ByteArray(w * 3) { i -> ((i * 29 + y * 71) and 0xFF).toByte() } }
        val img = RgbImage(w, 4, rows.reduce { a, b -> a + b })
        val out = Resample.resize(img, 5, 4, ResampleFilter.BICUBIC)
        val perRow = rows.map { Resample.resize(RgbImage(w, 1, it), 5, 1, ResampleFilter.BICUBIC).rgb }.reduce { a, b -> a + b }
        assertArrayEquals(perRow, out.rgb)
        // and a resize to the same size is a copy
        assertArrayEquals(img.rgb, Resample.resize(img, w, 4, ResampleFilter.BILINEAR).rgb)
    }

    @Test
    fun paddedWhenResizeIsBelowCrop() {
        // resize 4 < crop 6: black border as torchvision's CenterCrop pads
        val t = EvalTransform(6, 4, "bilinear", floatArrayOf(0f, 0f, 0f), floatArrayOf(1f, 1f, 1f))
        val img = RgbImage(4, 4, ByteArray(48) { -1 })
        val crop = t.resizeCrop(img)
        assertEquals(6, crop.width)
        assertEquals(0, crop.rgb[0].toInt())
        assertEquals(-1, crop.rgb[(1 * 6 + 1) * 3].toInt())
    }
}

package org.hydravit.edge.policy

import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import java.io.File
import java.nio.file.Files
import java.util.Date

class ReportTest {
    @Test
    fun percentileMatchesThePythonHarness() {
        val s = LatencyStats.of(listOf(5.0, 1.0, 3.0, 2.0, 4.0))
        assertEquals(3.0, s.medianMs, 1e-12)
        assertEquals(4.6, s.p90Ms, 1e-12)
        assertEquals(1.0, s.minMs, 1e-12)
        assertEquals(5, s.runs)
        assertEquals(7.0, Stats.percentile(listOf(7.0), 90.0), 1e-12)
    }

    private fun sampleReport(): ReportBuilder {
        val device = DeviceInfo(
            name = "Test Phone", platform = "android", manufacturer = "Acme", model = "T1", os = "Android 15 (API 35)",
            cpu = "arm64-v8a", cpuCores = 8, memoryMb = 8000.0, runtimes = mapOf("onnxruntime" to "1.20.0"),
        )
        val b = ReportBuilder(device, sha256Hex("{}".toByteArray()), "hydravit-edge-android", "0.1.0",
            settings = mapOf("runs" to 20, "warmup" to 3, "threads" to null, "batch" to 1))
        for (k in listOf(3, 6, 12)) {
            b.add(ReportRow(
                k = k, backend = "onnxruntime", artifact = "onnx/hydravit.onnx", target = "onnx", mode = "single",
                compute = "cpu", latency = LatencyStats.of((1..20).map { k * (1.0 + it / 100.0) }),
                loadMs = 120.0, switchMs = if (k == 3) null else 0.3, peakRssMb = 150.0 + k, fileBytes = 1234L,
            ))
        }
        b.add(ReportRow(k = 6, backend = "onnxruntime", artifact = "onnx/hydravit.onnx", target = "onnx", mode = "single",
            compute = "cpu", latency = LatencyStats.of(listOf(6.0, 6.5, 7.0))))  // replaces the first k=6 row
        return b
    }

    @Test
    fun reportHasTheSchemaFields() {
        val json = sampleReport().toJson(Date(0))
        assertEquals(1, json.getInt("schema_version"))
        assertEquals("1970-01-01T00:00:00Z", json.getString("created"))
        assertEquals("44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", json.getString("manifest_sha256"))
        val rows = json.getJSONArray("rows")
        assertEquals(3, rows.length())
        val first = rows.getJSONObject(0)
        assertTrue(first.has("switch_ms") && first.isNull("switch_ms"), "nulls are written, not dropped")
        assertEquals(6.5, rows.getJSONObject(1).getDouble("latency_median_ms"), 1e-9)
        assertTrue(json.getJSONObject("device").isNull("gpu"))
        assertThrows(IllegalArgumentException::class.java) { ReportRow(k = 3, backend = "onnxruntime", artifact = "a") }
    }

    /** Writes the sample report where tests/test_kotlin_policy.py validates it against the JSON Schema. */
    @Test
    fun writesAReportAtomically() {
        val target = System.getProperty("hydravit.reportOut")?.let { File(it) }
            ?: File(Files.createTempDirectory("hydravit-report").toFile(), "report.json")
        sampleReport().write(target)
        val back = JSONObject(target.readText())
        assertEquals("Test Phone", back.getJSONObject("device").getString("name"))
        assertTrue(target.parentFile.listFiles()!!.none { it.name.endsWith(".tmp") })
    }
}

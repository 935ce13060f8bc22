package org.hydravit.edge.policy

import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

/** (k, precision) options: references, the rank, the cap in latency (as tests/test_policy_precision.py). */
class PolicyOptionsTest {
    private val noBudget = PolicyConfig.fromJson(JSONObject(
        JSONObject(vectorsFile().readText()).getJSONObject("luts").getJSONObject("P").getJSONObject("policy").toString(),
    ).put("budget_ms", JSONObject.NULL))

    @Test
    fun references() {
        assertEquals(OptionRef(6), OptionRef.parse(6))
        assertEquals(OptionRef(6, "int8"), OptionRef.parse("6@int8"))
        assertEquals(OptionRef(12, "int8-static"), OptionRef.parse(" 12 @ int8-static "))
        assertEquals(OptionRef(6, "fp16"), OptionRef.parse(JSONObject().put("k", 6).put("precision", "fp16")))
        for (bad in listOf("six", "6", 0, true, 6.0, JSONObject().put("k", 6).put("x", 1), JSONObject().put("k", "6"))) {
            assertNull(OptionRef.parse(bad), "$bad")
        }
        val opts = listOf(PolicyOption(6, "int8", 1.0), PolicyOption(6, "fp16", 2.0), PolicyOption(3, "fp32", 1.0))
        assertEquals("fp16", OptionRef(6).resolve(opts)!!.precision)
        assertEquals("fp32", OptionRef(3).resolve(opts)!!.precision)
        assertNull(OptionRef(6, "fp32").resolve(opts))
    }

    @Test
    fun rankTiesFollowThePrecisionOrder() {
        val same = listOf("int8-static", "int8", "fp16", "fp32", "bf16").map { PolicyOption(6, it, 5.0) }
        assertEquals(listOf("fp32", "fp16", "int8", "int8-static", "bf16"), same.sortedWith(Ranking(same).order).map { it.precision })
        assertEquals("fp32", Policy.decide(same, noBudget, PolicyInput(battery = 100.0)).precision)
        val mixed = listOf(PolicyOption(3, "fp32", 5.0, 0.9), PolicyOption(6, "int8", 4.0))
        assertEquals(6, Policy.decide(mixed, noBudget, PolicyInput(battery = 100.0)).k) // one without top1: rank by k
    }

    @Test
    fun unmeasuredLatencyKeepsTheCapsInK() {
        val state = PolicyState(mapOf(3 to 0.0, 6 to 0.0, 12 to 0.0), noBudget)
        assertEquals(listOf(12, 6, 3), listOf(100.0, 30.0, 10.0).map { state.update(PolicyInput(battery = it)).k })
    }

    @Test
    fun badOptions() {
        val e = assertThrows(PolicyException::class.java) {
            Policy.decide(listOf(PolicyOption(3, "fp32", 1.0), PolicyOption(3, "fp32", 2.0)), noBudget, PolicyInput())
        }
        assertEquals("invalid_table", e.code)
        assertEquals("empty_table", assertThrows(PolicyException::class.java) {
            Policy.decide(listOf(PolicyOption(3, "fp32", 1.0, frontier = false)), noBudget, PolicyInput())
        }.code)
        assertEquals("invalid_switch_state", assertThrows(PolicyException::class.java) {
            PolicyInput.fromJson(JSONObject().put("materialized", JSONArray().put("six")))
        }.code)
    }

    @Test
    fun precisionRowsAndTheReason() {
        val lut = Lut(JSONObject(vectorsFile().readText()).getJSONObject("luts").getJSONObject("P"))
        val dev = lut.device("frontier-phone")
        assertEquals(listOf(OptionRef(6, "fp32"), OptionRef(9, "fp32"), OptionRef(9, "fp16")),
            dev.options.filter { !it.frontier }.map { it.ref })
        assertEquals(mapOf(3 to 6.0, 6 to 12.0, 9 to 18.0, 12 to 24.0), dev.latency)
        val d = lut.device("mixed-phone").decide(PolicyInput(battery = 35.0))
        assertEquals(9 to "int8", d.k to d.precision)
        assertEquals(12.0, d.capMs)
        assertTrue(d.reason.contains("k=9 int8") && d.reason.contains("within k=6's 12 ms"), d.reason)
        assertEquals(listOf("fp16"), lut.device("fp16-board").precisions)
    }

    @Test
    fun ownReportRowsKeepTheirPrecision() {
        val report = JSONObject().put("device", JSONObject().put("name", "Pixel 9")).put("rows", JSONArray()
            .put(JSONObject().put("k", 6).put("backend", "onnxruntime").put("precision", "fp32").put("latency_p90_ms", 20.0))
            .put(JSONObject().put("k", 6).put("backend", "onnxruntime").put("precision", "int8").put("latency_p90_ms", 9.0)
                .put("accuracy", JSONObject().put("dataset", "d").put("top1", 0.7))))
        val entry = Tables.entryFromReport(report, "onnxruntime")!!
        val dev = LutDevice(entry, noBudget)
        assertEquals(listOf(OptionRef(6, "fp32"), OptionRef(6, "int8")), dev.options.map { it.ref })
        assertEquals(0.7, dev.options[1].top1)
    }
}

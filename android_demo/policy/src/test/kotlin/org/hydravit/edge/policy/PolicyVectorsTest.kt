package org.hydravit.edge.policy

import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertThrows
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.DynamicTest
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestFactory
import java.io.File

/** Locates the shared vectors: -Dhydravit.policyVectors=PATH, else tests/policy_vectors.json above the working dir. */
internal fun vectorsFile(): File {
    System.getProperty("hydravit.policyVectors")?.let { return File(it) }
    var dir: File? = File(System.getProperty("user.dir")).absoluteFile
    while (dir != null) {
        val candidate = File(dir, "tests/policy_vectors.json")
        if (candidate.isFile) return candidate
        dir = dir.parentFile
    }
    error("tests/policy_vectors.json not found above ${System.getProperty("user.dir")}; pass -Dhydravit.policyVectors=PATH")
}

class PolicyVectorsTest {
    private val vectors = JSONObject(vectorsFile().readText())

    /** Runs one case like tests/test_policy.py: one state per case, errors leave the state unchanged; 'previous' is an option reference. */
    private fun runCase(case: JSONObject): List<Map<String, Any?>> {
        val lut = Lut(vectors.getJSONObject("luts").getJSONObject(case.getString("lut")))
        val backend = if (case.isNull("backend")) null else case.getString("backend")
        var state: PolicyState? = null
        val steps = case.getJSONArray("steps")
        return (0 until steps.length()).map { i ->
            val step = steps.getJSONObject(i)
            try {
                val s = state ?: lut.device(case.getString("device"), backend).state().also { state = it }
                if (step.has("previous_k")) s.previousK = step.getInt("previous_k")
                if (step.has("previous")) {
                    s.previous = OptionRef.parse(step.get("previous"))
                        ?: throw PolicyException("invalid_previous", "previous must be k, 'k@precision' or {k, precision}")
                }
                val d = s.update(PolicyInput.fromJson(step.getJSONObject("input")))
                mapOf("k" to d.k, "precision" to d.precision, "limit" to d.limit, "band" to d.band, "fits_budget" to d.fitsBudget)
            } catch (e: PolicyException) {
                mapOf("error" to e.code)
            }
        }
    }

    @TestFactory
    fun sharedVectors(): List<DynamicTest> {
        val cases = vectors.getJSONArray("cases")
        assertTrue(cases.length() >= 40, "expected the full vector set")
        return (0 until cases.length()).map { i ->
            val case = cases.getJSONObject(i)
            DynamicTest.dynamicTest(case.getString("name")) {
                val got = runCase(case)
                val steps = case.getJSONArray("steps")
                for (s in 0 until steps.length()) {
                    val expect = steps.getJSONObject(s).getJSONObject("expect")
                    val want = expect.keys().asSequence().associateWith { key ->
                        when (val v = expect.get(key)) {
                            JSONObject.NULL -> null
                            is Number -> v.toInt()
                            else -> v
                        }
                    }
                    val have = want.keys.associateWith { got[s][it] }
                    assertEquals(want, have, "case '${case.getString("name")}' step $s input ${steps.getJSONObject(s).get("input")}")
                }
            }
        }
    }

    @Test
    fun capForFractionEdges() {
        assertEquals(3, Policy.capForFraction(listOf(3, 6, 12), 0.0))
        assertEquals(6, Policy.capForFraction(listOf(3, 6, 12), 0.5))
        assertEquals(29, Policy.capForFraction((1..100).toList(), 0.29))
    }

    @Test
    fun badPolicyDataIsRejected() {
        val lut = JSONObject(vectors.getJSONObject("luts").getJSONObject("A").toString())
        lut.getJSONObject("policy").put("battery_bands", org.json.JSONArray().put(
            JSONObject().put("name", "x").put("min_percent", 10).put("max_k_fraction", 1)))
        val e = assertThrows(PolicyException::class.java) { Lut(lut) }
        assertEquals("invalid_policy", e.code)
        val notLut = JSONObject().put("format", "something-else")
        assertEquals("invalid_lut", assertThrows(PolicyException::class.java) { Lut(notLut) }.code)
    }

    @Test
    fun unknownDeviceNamesTheChoices() {
        val lut = Lut(vectors.getJSONObject("luts").getJSONObject("A"))
        val e = assertThrows(PolicyException::class.java) { lut.device("nope") }
        assertEquals("unknown_device", e.code)
        assertTrue(e.message!!.contains("fast-phone, slow-board"), e.message)
    }

    @Test
    fun reasonExplainsTheChoice() {
        val lut = Lut(vectors.getJSONObject("luts").getJSONObject("A"))
        val d = lut.device("fast-phone").decide(PolicyInput(battery = 35.0))
        assertEquals(6, d.k)
        assertTrue(d.reason.contains("band 'medium'"), d.reason)
    }
}

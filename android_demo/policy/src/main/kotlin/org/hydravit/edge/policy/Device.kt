package org.hydravit.edge.policy

/**
 * Android-free pieces of the demo app: power-state mapping, image preprocessing, top-k, and
 * choosing the latency table for this phone.  The app passes raw platform values in; these
 * functions are what the JUnit tests cover.
 */
object AndroidPower {
    // android.os.BatteryManager constants (stable since API 1/5/17).
    const val BATTERY_STATUS_CHARGING = 2
    const val BATTERY_STATUS_FULL = 5

    // android.os.PowerManager.THERMAL_STATUS_* (API 29).
    const val THERMAL_STATUS_NONE = 0
    const val THERMAL_STATUS_LIGHT = 1
    const val THERMAL_STATUS_MODERATE = 2
    const val THERMAL_STATUS_SEVERE = 3

    /** Battery percent from ACTION_BATTERY_CHANGED's level/scale; null when the phone does not say. */
    fun batteryPercent(level: Int, scale: Int): Double? =
        if (level < 0 || scale <= 0) null else (100.0 * level / scale).coerceIn(0.0, 100.0)

    /** On external power: charging/full status or any plug. */
    fun onPower(status: Int, plugged: Int): Boolean =
        status == BATTERY_STATUS_CHARGING || status == BATTERY_STATUS_FULL || plugged > 0

    /**
     * PowerManager thermal status -> the policy's states (iOS ProcessInfo.ThermalState names):
     * NONE -> nominal, LIGHT -> fair, MODERATE -> serious, SEVERE and above -> critical; null if unknown.
     */
    fun thermalState(status: Int?): String? = when {
        status == null || status < 0 -> null
        status == THERMAL_STATUS_NONE -> "nominal"
        status == THERMAL_STATUS_LIGHT -> "fair"
        status == THERMAL_STATUS_MODERATE -> "serious"
        else -> "critical"
    }
}

object Imaging {
    /**
     * ARGB pixels (row-major, [size] x [size], as Bitmap.getPixels gives them) -> normalised
     * float32 NCHW (1 x 3 x size x size): ((channel / 255) - mean) / std.
     */
    fun chwFromArgb(pixels: IntArray, size: Int, mean: FloatArray, std: FloatArray): FloatArray {
        require(pixels.size == size * size) { "expected ${size * size} pixels, got ${pixels.size}" }
        val plane = size * size
        val out = FloatArray(3 * plane)
        for (i in 0 until plane) {
            val p = pixels[i]
            out[i] = (((p shr 16) and 0xFF) / 255f - mean[0]) / std[0]
            out[plane + i] = (((p shr 8) and 0xFF) / 255f - mean[1]) / std[1]
            out[2 * plane + i] = ((p and 0xFF) / 255f - mean[2]) / std[2]
        }
        return out
    }

    /** Indices and softmax probabilities of the [n] largest logits, best first. */
    fun topK(logits: FloatArray, n: Int): List<Pair<Int, Float>> {
        val max = logits.maxOrNull() ?: return emptyList()
        val exp = logits.map { kotlin.math.exp((it - max).toDouble()) }
        val sum = exp.sum()
        return logits.indices.sortedByDescending { logits[it] }.take(n).map { it to (exp[it] / sum).toFloat() }
    }
}

object Tables {
    /**
     * The latency table the app uses: the LUT's entry for this phone and backend; else one
     * built from the app's own last benchmark report (with the LUT's policy); else the LUT's
     * first entry of the backend (flagged by [Choice.fallback]).
     */
    data class Choice(val device: LutDevice, val source: String, val fallback: Boolean)

    fun choose(lut: Lut, deviceName: String, backend: String, ownReport: org.json.JSONObject? = null): Choice {
        try {
            return Choice(lut.device(deviceName, backend), "lut.json entry '${deviceName}'", false)
        } catch (_: PolicyException) {
        }
        if (ownReport != null) {
            val entry = entryFromReport(ownReport, backend)
            if (entry != null) {
                return Choice(LutDevice(entry, lut.policy), "this phone's last benchmark report", false)
            }
        }
        val other = lut.devices.firstOrNull { it.getString("backend") == backend } ?: lut.devices.first()
        return Choice(lut.device(other.getString("name"), other.getString("backend")),
            "lut.json entry '${other.getString("name")}' (this phone is not in the LUT)", true)
    }

    /** A LUT device entry (p90 rows, one per k and precision, with top-1 where measured) from a report's rows of [backend]; null when it has none. */
    fun entryFromReport(report: org.json.JSONObject, backend: String): org.json.JSONObject? {
        val rows = report.optJSONArray("rows") ?: return null
        val out = org.json.JSONArray()
        val seen = mutableSetOf<Pair<Int, String>>()
        for (i in 0 until rows.length()) {
            val r = rows.getJSONObject(i)
            if (r.optString("backend") != backend || r.isNull("latency_p90_ms")) continue
            val k = r.getInt("k")
            val precision = if (r.isNull("precision")) "fp32" else r.getString("precision")
            if (!seen.add(k to precision)) continue
            val row = org.json.JSONObject().put("k", k).put("precision", precision)
                .put("p90_ms", r.getDouble("latency_p90_ms")).put("latency_basis", "p90")
            r.optJSONObject("accuracy")?.let { acc -> if (!acc.isNull("top1")) row.put("top1", acc.getDouble("top1")) }
            out.put(row)
        }
        if (out.length() == 0) return null
        val device = report.getJSONObject("device")
        return org.json.JSONObject()
            .put("name", device.getString("name"))
            .put("source", "measured")
            .put("backend", backend)
            .put("rows", out)
    }
}

package org.hydravit.edge.policy

import org.json.JSONObject

/**
 * The policy's candidates, ported from `hydravit_edge/policy_options.py`: (k, precision) options,
 * the rank that orders them, and references to them (`k`, `"k@precision"`, `{k, precision}`).
 *
 * Rank ("more accurate"): the highest top1 when every candidate has one, else the largest k;
 * ties: lower p90, then [PRECISION_ORDER] (other names after, alphabetically), then larger k.
 * A bare k names k at fp32 where the table has it, else k's first precision in that order.
 */

/** The precisions in the order that breaks rank ties (hydravit_edge.precision.PRECISIONS). */
val PRECISION_ORDER: List<String> = listOf("fp32", "fp16", "int8", "int8-static")

/** One (k, precision) the policy may pick; [frontier] false: the LUT marks it dominated (not a candidate). */
data class PolicyOption(
    val k: Int,
    val precision: String = "fp32",
    /** Latency compared with the budget; 0: not measured. */
    val p90Ms: Double,
    val top1: Double? = null,
    val macs: Long? = null,
    val frontier: Boolean = true,
) {
    val ref: OptionRef get() = OptionRef(k, precision)

    fun label(withPrecision: Boolean): String = if (withPrecision) "k=$k $precision" else "k=$k"
}

/** A reference to an option; [precision] null: "k at fp32, else its first precision" ([resolve]). */
data class OptionRef(val k: Int, val precision: String? = null) {
    fun text(): String = if (precision == null) "k=$k" else "k=$k $precision"

    /** The option this names among [options] (null: not there). */
    fun resolve(options: List<PolicyOption>): PolicyOption? {
        val atK = options.filter { it.k == k }
        if (precision != null) return atK.firstOrNull { it.precision == precision }
        return atK.minWithOrNull(compareBy<PolicyOption>({ precisionIndex(it.precision) }, { unknownName(it.precision) }))
    }

    companion object {
        private val REF = Regex("""^\s*(\d+)\s*@\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*$""")

        /** From JSON or code: an Int k, "k@precision", {"k": k, "precision": p}, an option; null for anything else. */
        fun parse(value: Any?): OptionRef? = when (value) {
            is OptionRef -> value
            is PolicyOption -> value.ref
            is Int -> if (value >= 1) OptionRef(value) else null
            is String -> REF.matchEntire(value)?.let { m ->
                m.groupValues[1].toIntOrNull()?.takeIf { it >= 1 }?.let { OptionRef(it, m.groupValues[2]) }
            }
            is JSONObject -> {
                val keys = value.keys().asSequence().toSet()
                val k = value.opt("k") as? Int
                val p = value.opt("precision")
                when {
                    "k" !in keys || !(keys - setOf("k", "precision")).isEmpty() || k == null || k < 1 -> null
                    p == null || p == JSONObject.NULL -> OptionRef(k)
                    p is String && p.isNotEmpty() -> OptionRef(k, p)
                    else -> null
                }
            }
            else -> null
        }
    }
}

internal fun precisionIndex(name: String): Int = PRECISION_ORDER.indexOf(name).let { if (it < 0) PRECISION_ORDER.size else it }

internal fun unknownName(name: String): String = if (name in PRECISION_ORDER) "" else name

/** Options sorted by k, then the precision order. */
internal val BY_K_AND_PRECISION: Comparator<PolicyOption> =
    compareBy({ it.k }, { precisionIndex(it.precision) }, { unknownName(it.precision) })

/** The rank of one table's options: [order] puts the more preferred first. */
class Ranking(candidates: List<PolicyOption>) {
    /** Rank by accuracy (every candidate has top1) or by k. */
    val byTop1: Boolean = candidates.all { it.top1 != null }

    val order: Comparator<PolicyOption> = compareBy<PolicyOption>(
        { -(if (byTop1) it.top1!! else it.k.toDouble()) }, { it.p90Ms }, { precisionIndex(it.precision) },
        { unknownName(it.precision) }, { -it.k },
    )

    fun best(options: List<PolicyOption>): PolicyOption = options.minWith(order)

    /** [a] ranks higher than [b] (a move from b to a is a rise). */
    fun above(a: PolicyOption, b: PolicyOption): Boolean = order.compare(a, b) < 0

    companion object {
        /** The smallest k at its fastest precision (ties: the precision order). */
        fun smallestFastest(options: List<PolicyOption>): PolicyOption {
            val k0 = options.minOf { it.k }
            return options.filter { it.k == k0 }
                .minWith(compareBy<PolicyOption>({ it.p90Ms }, { precisionIndex(it.precision) }, { unknownName(it.precision) }))
        }
    }
}

object Options {
    /** The old table form: every k at fp32, no accuracy. */
    fun of(latency: Map<Int, Double>): List<PolicyOption> = latency.map { (k, p90) -> PolicyOption(k, "fp32", p90) }

    /** Validated and sorted; throws `empty_table` when there are none, `invalid_table` for a bad or repeated one. */
    fun checked(options: List<PolicyOption>): List<PolicyOption> {
        if (options.isEmpty()) throw PolicyException("empty_table", "the lookup table has no rows for this device")
        for (o in options) {
            if (o.k < 1) throw PolicyException("invalid_table", "option k must be an integer >= 1, got ${o.k}")
            if (o.precision.isEmpty()) throw PolicyException("invalid_table", "option precision must be a non-empty string")
            if (o.p90Ms.isNaN() || o.p90Ms.isInfinite() || o.p90Ms < 0.0) {
                throw PolicyException("invalid_table", "option ${o.ref.text()}: p90_ms must be a number >= 0, got ${o.p90Ms}")
            }
            val t = o.top1
            if (t != null && (t.isNaN() || t < 0.0 || t > 1.0)) {
                throw PolicyException("invalid_table", "option ${o.ref.text()}: top1 must be a fraction 0..1, got $t")
            }
        }
        val twice = options.groupBy { it.ref }.filter { it.value.size > 1 }.keys
        if (twice.isNotEmpty()) {
            throw PolicyException("invalid_table", "the table lists (k, precision) twice: " +
                twice.joinToString(", ") { "${it.k}@${it.precision}" })
        }
        return options.sortedWith(BY_K_AND_PRECISION)
    }

    /** k -> p90 ms of each k's default option (fp32 where present, else its first precision). */
    fun defaultLatency(options: List<PolicyOption>): Map<Int, Double> =
        options.map { it.k }.distinct().sorted().associateWith { OptionRef(it).resolve(options)!!.p90Ms }
}

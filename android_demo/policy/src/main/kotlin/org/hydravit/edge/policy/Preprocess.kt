package org.hydravit.edge.policy

import org.json.JSONObject
import kotlin.math.PI
import kotlin.math.ceil
import kotlin.math.cos
import kotlin.math.floor
import kotlin.math.sin

/**
 * The model's evaluation transform on decoded pixels, the same as the Python toolkit's
 * `hydravit_edge.transform.EvalTransform` (timm's `create_transform(..., is_training=False)`):
 * convert to RGB, resize the shorter side to [EvalTransform.resize] with Pillow's resampling
 * filter [EvalTransform.interpolation], centre-crop [EvalTransform.crop] x [EvalTransform.crop],
 * `x = (pixel / 255 - mean[c]) / std[c]`, float32 CHW.
 *
 * The resize reproduces Pillow's 8-bit `ImagingResample` (libImaging/Resample.c, Pillow 13) bit for
 * bit, so the uint8 crop equals the one the model was evaluated with; tests/transform_vectors.json
 * holds the cases Python, Kotlin and Swift all pass. The platform code only decodes the image file
 * into pixels (Bitmap.getPixels) and hands them to [EvalTransform.applyArgb].
 */
class PreprocessException(message: String) : IllegalArgumentException(message)

/** Decoded pixels, row-major, three bytes R, G, B per pixel (what Pillow's `convert("RGB")` gives). */
class RgbImage(val width: Int, val height: Int, val rgb: ByteArray) {
    init {
        if (width <= 0 || height <= 0 || rgb.size.toLong() != width.toLong() * height * 3) {
            throw PreprocessException("an RGB image of $width x $height needs ${width.toLong() * height * 3} bytes, got ${rgb.size}")
        }
    }

    companion object {
        /**
         * ARGB ints, row-major (Android's Bitmap.getPixels, which gives unpremultiplied colours):
         * the alpha byte is dropped and the colours are kept, as Pillow's RGBA -> RGB does.
         */
        fun fromArgb(pixels: IntArray, width: Int, height: Int): RgbImage {
            if (width <= 0 || height <= 0 || pixels.size.toLong() != width.toLong() * height) {
                throw PreprocessException("expected $width x $height = ${width.toLong() * height} pixels, got ${pixels.size}")
            }
            val out = ByteArray(pixels.size * 3)
            for (i in pixels.indices) {
                val p = pixels[i]
                out[3 * i] = (p shr 16).toByte()
                out[3 * i + 1] = (p shr 8).toByte()
                out[3 * i + 2] = p.toByte()
            }
            return RgbImage(width, height, out)
        }

        /** One grey byte per pixel (Pillow's mode L) -> RGB with R = G = B. */
        fun fromGrey(grey: ByteArray, width: Int, height: Int): RgbImage {
            if (width <= 0 || height <= 0 || grey.size.toLong() != width.toLong() * height) {
                throw PreprocessException("expected $width x $height = ${width.toLong() * height} grey bytes, got ${grey.size}")
            }
            val out = ByteArray(grey.size * 3)
            for (i in grey.indices) {
                out[3 * i] = grey[i]
                out[3 * i + 1] = grey[i]
                out[3 * i + 2] = grey[i]
            }
            return RgbImage(width, height, out)
        }
    }
}

/** Pillow's resampling filters (libImaging/Resample.c) with their support; `nearest` is not one of them. */
enum class ResampleFilter(val id: String, val support: Double) {
    BOX("box", 0.5) {
        override fun weight(x: Double): Double = if (x > -0.5 && x <= 0.5) 1.0 else 0.0
    },
    BILINEAR("bilinear", 1.0) {
        override fun weight(x: Double): Double {
            val a = if (x < 0.0) -x else x
            return if (a < 1.0) 1.0 - a else 0.0
        }
    },
    HAMMING("hamming", 1.0) {
        override fun weight(x: Double): Double {
            var a = if (x < 0.0) -x else x
            if (a == 0.0) return 1.0
            if (a >= 1.0) return 0.0
            a *= PI
            // C: sin(x) / x * (0.54f + 0.46f * cos(x)), the float constants widened to double
            return sin(a) / a * (HAMMING_A + HAMMING_B * cos(a))
        }
    },
    BICUBIC("bicubic", 2.0) {
        override fun weight(x: Double): Double {
            val a = -0.5
            val t = if (x < 0.0) -x else x
            if (t < 1.0) return ((a + 2.0) * t - (a + 3.0)) * t * t + 1
            if (t < 2.0) return (((t - 5) * t + 8) * t - 4) * a
            return 0.0
        }
    },
    LANCZOS("lanczos", 3.0) {
        override fun weight(x: Double): Double = if (-3.0 <= x && x < 3.0) sinc(x) * sinc(x / 3) else 0.0
    };

    abstract fun weight(x: Double): Double

    companion object {
        private val HAMMING_A = 0.54f.toDouble()
        private val HAMMING_B = 0.46f.toDouble()

        private fun sinc(x: Double): Double {
            if (x == 0.0) return 1.0
            val t = x * PI
            return sin(t) / t
        }

        /** The filter named by a manifest's `interpolation` (timm's names). */
        fun named(name: String): ResampleFilter = entries.firstOrNull { it.id == name.lowercase() }
            ?: throw PreprocessException(
                "interpolation '$name' is not supported by this app (it implements ${entries.joinToString(", ") { it.id }}" +
                    if (name.lowercase() == "nearest") "; 'nearest' is not implemented)" else ")"
            )
    }
}

/**
 * Pillow's `Image.resize` for 8-bit RGB (`ImagingResample`): separable, one pass per axis whose size
 * changes, coefficients in fixed point with [PRECISION_BITS] fraction bits, each pass rounding and
 * clipping to uint8. Pillow 13 runs the vertical pass first when the height shrinks more than twice
 * as much as the width, the horizontal pass first otherwise.
 */
object Resample {
    const val PRECISION_BITS = 32 - 8 - 2

    /** Per output pixel: first input index, number of taps, and `ksize` fixed-point weights. */
    class Coefficients(val ksize: Int, val bounds: IntArray, val weights: IntArray)

    /** `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole input range (box 0..inSize). */
    fun coefficients(inSize: Int, outSize: Int, filter: ResampleFilter): Coefficients {
        val scale = inSize.toDouble() / outSize
        val filterscale = if (scale < 1.0) 1.0 else scale
        val support = filter.support * filterscale
        val ksize = ceil(support).toInt() * 2 + 1
        val invFilterscale = 1.0 / filterscale
        val bounds = IntArray(outSize * 2)
        val weights = IntArray(outSize * ksize)
        val k = DoubleArray(ksize)
        for (xx in 0 until outSize) {
            val center = (xx + 0.5) * scale
            var ww = 0.0
            var xmin = (center - support + 0.5).toInt()
            if (xmin < 0) xmin = 0
            var xmax = (center + support + 0.5).toInt()
            if (xmax > inSize) xmax = inSize
            xmax -= xmin
            for (x in 0 until xmax) {
                val w = filter.weight(((x + xmin) - center + 0.5) * invFilterscale)
                k[x] = w
                ww += w
            }
            if (ww != 0.0) {
                for (x in 0 until xmax) k[x] /= ww
            }
            for (x in 0 until xmax) {
                weights[xx * ksize + x] = if (k[x] < 0) {
                    (-0.5 + k[x] * (1 shl PRECISION_BITS)).toInt()
                } else {
                    (0.5 + k[x] * (1 shl PRECISION_BITS)).toInt()
                }
            }
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        return Coefficients(ksize, bounds, weights)
    }

    private fun clip8(v: Int): Byte {
        val s = v shr PRECISION_BITS
        return (if (s < 0) 0 else if (s > 255) 255 else s).toByte()
    }

    /** The image resized to [width] x [height] as Pillow's `Image.resize((width, height), filter)`. */
    fun resize(image: RgbImage, width: Int, height: Int, filter: ResampleFilter): RgbImage {
        if (width <= 0 || height <= 0) throw PreprocessException("cannot resize to $width x $height")
        val horizontalFirst = !((image.height - height) > 0 && (image.height - height) > (image.width - width) * 2)
        var out = image
        if (horizontalFirst) {
            if (width != out.width) out = horizontal(out, width, filter)
            if (height != out.height) out = vertical(out, height, filter)
        } else {
            if (height != out.height) out = vertical(out, height, filter)
            if (width != out.width) out = horizontal(out, width, filter)
        }
        return if (out === image) RgbImage(image.width, image.height, image.rgb.copyOf()) else out
    }

    private fun horizontal(image: RgbImage, outWidth: Int, filter: ResampleFilter): RgbImage {
        val c = coefficients(image.width, outWidth, filter)
        val src = image.rgb
        val out = ByteArray(outWidth * image.height * 3)
        val half = 1 shl (PRECISION_BITS - 1)
        for (y in 0 until image.height) {
            val rowIn = y * image.width * 3
            val rowOut = y * outWidth * 3
            for (xx in 0 until outWidth) {
                val xmin = c.bounds[xx * 2]
                val n = c.bounds[xx * 2 + 1]
                val kBase = xx * c.ksize
                var s0 = half
                var s1 = half
                var s2 = half
                for (x in 0 until n) {
                    val k = c.weights[kBase + x]
                    val p = rowIn + (x + xmin) * 3
                    s0 += (src[p].toInt() and 0xFF) * k
                    s1 += (src[p + 1].toInt() and 0xFF) * k
                    s2 += (src[p + 2].toInt() and 0xFF) * k
                }
                out[rowOut + xx * 3] = clip8(s0)
                out[rowOut + xx * 3 + 1] = clip8(s1)
                out[rowOut + xx * 3 + 2] = clip8(s2)
            }
        }
        return RgbImage(outWidth, image.height, out)
    }

    private fun vertical(image: RgbImage, outHeight: Int, filter: ResampleFilter): RgbImage {
        val c = coefficients(image.height, outHeight, filter)
        val src = image.rgb
        val stride = image.width * 3
        val out = ByteArray(outHeight * stride)
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until outHeight) {
            val ymin = c.bounds[yy * 2]
            val n = c.bounds[yy * 2 + 1]
            val kBase = yy * c.ksize
            for (i in 0 until stride) {  // every byte of the row: channels are independent
                var s = half
                for (y in 0 until n) {
                    s += (src[(y + ymin) * stride + i].toInt() and 0xFF) * c.weights[kBase + y]
                }
                out[yy * stride + i] = clip8(s)
            }
        }
        return RgbImage(image.width, outHeight, out)
    }
}

/**
 * Resize the shorter side to [resize], centre-crop [crop] x [crop], normalise with [mean]/[std]:
 * the transform the model was evaluated with, as the export manifest's `input` spec states it.
 */
class EvalTransform(
    val crop: Int,
    val resize: Int,
    val interpolation: String,
    val mean: FloatArray,
    val std: FloatArray,
) {
    val filter: ResampleFilter = ResampleFilter.named(interpolation)

    init {
        if (crop <= 0 || resize <= 0) throw PreprocessException("crop ($crop) and resize ($resize) must be positive")
        if (mean.size != 3 || std.size != 3) throw PreprocessException("mean and std need 3 values, got ${mean.size} and ${std.size}")
        if (std.any { it == 0f }) throw PreprocessException("std must not be 0")
    }

    /** Size after the resize: shorter side [resize], longer `int(resize * long / short)`; unchanged when short == resize. */
    fun resizedSize(width: Int, height: Int): Pair<Int, Int> {
        val short = minOf(width, height)
        val long = maxOf(width, height)
        if (short == resize) return width to height
        val newLong = ((resize.toLong() * long).toDouble() / short).toInt()
        return if (width <= height) resize to newLong else newLong to resize
    }

    /** The uint8 RGB crop (torchvision's Resize(int) + CenterCrop on Pillow images). */
    fun resizeCrop(image: RgbImage): RgbImage {
        val (w, h) = resizedSize(image.width, image.height)
        var img = if (w == image.width && h == image.height) image else Resample.resize(image, w, h, filter)
        if (img.width < crop || img.height < crop) img = pad(img)  // only when resize < crop; as torchvision, black
        val top = Math.rint((img.height - crop) / 2.0).toInt()    // Python round(): half to even
        val left = Math.rint((img.width - crop) / 2.0).toInt()
        val out = ByteArray(crop * crop * 3)
        for (y in 0 until crop) {
            System.arraycopy(img.rgb, ((top + y) * img.width + left) * 3, out, y * crop * 3, crop * 3)
        }
        return RgbImage(crop, crop, out)
    }

    private fun pad(img: RgbImage): RgbImage {
        val w = maxOf(img.width, crop)
        val h = maxOf(img.height, crop)
        val out = ByteArray(w * h * 3)
        val x0 = (w - img.width) / 2
        val y0 = (h - img.height) / 2
        for (y in 0 until img.height) {
            System.arraycopy(img.rgb, y * img.width * 3, out, ((y0 + y) * w + x0) * 3, img.width * 3)
        }
        return RgbImage(w, h, out)
    }

    /** The cropped pixels -> normalised float32 CHW (3 x crop x crop). */
    fun normalize(cropped: RgbImage): FloatArray {
        val plane = cropped.width * cropped.height
        val out = FloatArray(3 * plane)
        for (i in 0 until plane) {
            for (c in 0 until 3) {
                out[c * plane + i] = ((cropped.rgb[3 * i + c].toInt() and 0xFF) / 255f - mean[c]) / std[c]
            }
        }
        return out
    }

    /** Decoded pixels of any size -> the model input (1 x 3 x crop x crop, flattened). */
    fun apply(image: RgbImage): FloatArray = normalize(resizeCrop(image))

    /** ARGB ints (Bitmap.getPixels) of any size -> the model input. */
    fun applyArgb(pixels: IntArray, width: Int, height: Int): FloatArray = apply(RgbImage.fromArgb(pixels, width, height))

    fun describe(): String = "resize the shorter side to $resize ($interpolation), centre-crop ${crop}x$crop"

    companion object {
        /** timm: the shorter side is resized to floor(img_size / crop_pct). */
        fun resizeFor(imgSize: Int, cropPct: Double): Int {
            if (!(cropPct > 0.0 && cropPct <= 1.0)) throw PreprocessException("crop_pct must be in (0, 1], got $cropPct")
            return floor(imgSize / cropPct).toInt()
        }

        /**
         * From a manifest's `input` spec (`crop`, `resize`, `interpolation`, `mean`, `std`; `crop_pct`
         * when `resize` is absent), missing fields from the model `config`. Manifests written before the
         * transform was recorded state neither: then resize = crop = img_size, bilinear.
         */
        fun fromSpec(input: JSONObject, config: JSONObject? = null): EvalTransform {
            fun source(key: String): JSONObject? = when {
                input.has(key) && !input.isNull(key) -> input
                config != null && config.has(key) && !config.isNull(key) -> config
                else -> null
            }
            val imgSize = when {
                input.has("img_size") -> input.getInt("img_size")
                input.optJSONArray("shape") != null -> input.getJSONArray("shape").let { it.getInt(it.length() - 1) }
                config != null && config.has("img_size") -> config.getInt("img_size")
                else -> throw PreprocessException("the input spec names no image size")
            }
            val crop = if (input.has("crop") && !input.isNull("crop")) input.getInt("crop") else imgSize
            val resize = when {
                input.has("resize") && !input.isNull("resize") -> input.getInt("resize")
                source("crop_pct") != null -> resizeFor(crop, source("crop_pct")!!.getDouble("crop_pct"))
                else -> crop
            }
            val interpolation = source("interpolation")?.getString("interpolation") ?: "bilinear"
            fun floats(key: String, default: FloatArray): FloatArray {
                val arr = source(key)?.getJSONArray(key) ?: return default
                return FloatArray(arr.length()) { arr.getDouble(it).toFloat() }
            }
            return EvalTransform(crop, resize, interpolation,
                floats("mean", floatArrayOf(0.485f, 0.456f, 0.406f)), floats("std", floatArrayOf(0.229f, 0.224f, 0.225f)))
        }
    }
}

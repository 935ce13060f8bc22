import Foundation

// The model's evaluation transform on decoded pixels, the same as the Python toolkit's
// `hydravit_edge.transform.EvalTransform` (timm's `create_transform(..., is_training=False)`) and the
// Android policy module's Preprocess.kt, which this file mirrors line by line: convert to RGB, resize
// the shorter side to `resize` with Pillow's resampling filter `interpolation`, centre-crop
// `crop` x `crop`, x = (pixel / 255 - mean[c]) / std[c], float32 CHW.
//
// The resize reproduces Pillow's 8-bit `ImagingResample` (libImaging/Resample.c, Pillow 13) bit for
// bit, so the uint8 crop equals the one the model was evaluated with; tests/transform_vectors.json
// holds the cases Python, Kotlin and Swift all pass. The app only decodes the image file into pixels
// and hands them to `EvalTransform.apply(rgba:width:height:)`.

/// Decoded pixels, row-major, three bytes R, G, B per pixel (what Pillow's `convert("RGB")` gives).
public struct RgbImage: Equatable {
    public let width: Int
    public let height: Int
    public let rgb: [UInt8]

    public init(width: Int, height: Int, rgb: [UInt8]) throws {
        guard width > 0, height > 0, rgb.count == width * height * 3 else {
            throw PolicyError("invalid_image", "an RGB image of \(width) x \(height) needs \(max(width, 0) * max(height, 0) * 3) bytes, got \(rgb.count)")
        }
        self.width = width
        self.height = height
        self.rgb = rgb
    }

    /// Internal: sizes already checked by the caller.
    init(unchecked width: Int, _ height: Int, _ rgb: [UInt8]) {
        self.width = width
        self.height = height
        self.rgb = rgb
    }

    /// RGBA bytes, row-major, colours not premultiplied: alpha is dropped and the colours kept, as Pillow's RGBA -> RGB does.
    public static func fromRGBA(_ rgba: [UInt8], width: Int, height: Int) throws -> RgbImage {
        guard width > 0, height > 0, rgba.count == width * height * 4 else {
            throw PolicyError("invalid_image", "expected \(width) x \(height) x 4 RGBA bytes, got \(rgba.count)")
        }
        var out = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            out[3 * i] = rgba[4 * i]
            out[3 * i + 1] = rgba[4 * i + 1]
            out[3 * i + 2] = rgba[4 * i + 2]
        }
        return RgbImage(unchecked: width, height, out)
    }

    /// One grey byte per pixel (Pillow's mode L) -> RGB with R = G = B.
    public static func fromGrey(_ grey: [UInt8], width: Int, height: Int) throws -> RgbImage {
        guard width > 0, height > 0, grey.count == width * height else {
            throw PolicyError("invalid_image", "expected \(width) x \(height) grey bytes, got \(grey.count)")
        }
        var out = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            out[3 * i] = grey[i]
            out[3 * i + 1] = grey[i]
            out[3 * i + 2] = grey[i]
        }
        return RgbImage(unchecked: width, height, out)
    }
}

/// Pillow's resampling filters (libImaging/Resample.c) with their support; `nearest` is not one of them.
public enum ResampleFilter: String, CaseIterable {
    case box, bilinear, hamming, bicubic, lanczos

    public var support: Double {
        switch self {
        case .box: return 0.5
        case .bilinear, .hamming: return 1.0
        case .bicubic: return 2.0
        case .lanczos: return 3.0
        }
    }

    // C: sin(x) / x * (0.54f + 0.46f * cos(x)), the float constants widened to double
    private static let hammingA = Double(Float(0.54))
    private static let hammingB = Double(Float(0.46))

    private static func sinc(_ x: Double) -> Double {
        if x == 0.0 { return 1.0 }
        let t = x * Double.pi
        return Foundation.sin(t) / t
    }

    public func weight(_ x: Double) -> Double {
        switch self {
        case .box:
            return x > -0.5 && x <= 0.5 ? 1.0 : 0.0
        case .bilinear:
            let a = x < 0.0 ? -x : x
            return a < 1.0 ? 1.0 - a : 0.0
        case .hamming:
            var a = x < 0.0 ? -x : x
            if a == 0.0 { return 1.0 }
            if a >= 1.0 { return 0.0 }
            a *= Double.pi
            return Foundation.sin(a) / a * (Self.hammingA + Self.hammingB * Foundation.cos(a))
        case .bicubic:
            let a = -0.5
            let t = x < 0.0 ? -x : x
            if t < 1.0 { return ((a + 2.0) * t - (a + 3.0)) * t * t + 1 }
            if t < 2.0 { return (((t - 5) * t + 8) * t - 4) * a }
            return 0.0
        case .lanczos:
            return -3.0 <= x && x < 3.0 ? Self.sinc(x) * Self.sinc(x / 3) : 0.0
        }
    }

    /// The filter named by a manifest's `interpolation` (timm's names).
    public static func named(_ name: String) throws -> ResampleFilter {
        if let f = ResampleFilter(rawValue: name.lowercased()) { return f }
        let known = allCases.map(\.rawValue).joined(separator: ", ")
        throw PolicyError("invalid_transform", "interpolation '\(name)' is not supported by this app (it implements \(known)"
            + (name.lowercased() == "nearest" ? "; 'nearest' is not implemented)" : ")"))
    }
}

/// Pillow's `Image.resize` for 8-bit RGB (`ImagingResample`): separable, one pass per axis whose size
/// changes, coefficients in fixed point with `precisionBits` fraction bits, each pass rounding and
/// clipping to uint8. Pillow 13 runs the vertical pass first when the height shrinks more than twice
/// as much as the width, the horizontal pass first otherwise.
public enum Resample {
    public static let precisionBits = 32 - 8 - 2

    /// Per output pixel: first input index, number of taps, and `ksize` fixed-point weights.
    public struct Coefficients {
        public let ksize: Int
        public let bounds: [Int]
        public let weights: [Int]
    }

    /// `precompute_coeffs` + `normalize_coeffs_8bpc` for the whole input range (box 0..inSize).
    public static func coefficients(inSize: Int, outSize: Int, filter: ResampleFilter) -> Coefficients {
        let scale = Double(inSize) / Double(outSize)
        let filterscale = scale < 1.0 ? 1.0 : scale
        let support = filter.support * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        let invFilterscale = 1.0 / filterscale
        var bounds = [Int](repeating: 0, count: outSize * 2)
        var weights = [Int](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        let one = Double(1 << precisionBits)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            var ww = 0.0
            var xmin = Int(center - support + 0.5)  // truncates toward zero, as C's (int)
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            if xmax < 0 { xmax = 0 }  // cannot happen for valid sizes; keeps the ranges below well-formed
            for x in 0..<xmax {
                let w = filter.weight((Double(x + xmin) - center + 0.5) * invFilterscale)
                k[x] = w
                ww += w
            }
            if ww != 0.0 {
                for x in 0..<xmax { k[x] /= ww }
            }
            for x in 0..<xmax {
                weights[xx * ksize + x] = k[x] < 0 ? Int(-0.5 + k[x] * one) : Int(0.5 + k[x] * one)
            }
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        return Coefficients(ksize: ksize, bounds: bounds, weights: weights)
    }

    @inline(__always)
    private static func clip8(_ v: Int) -> UInt8 {
        let s = v >> precisionBits
        return UInt8(s < 0 ? 0 : (s > 255 ? 255 : s))
    }

    /// The image resized to `width` x `height` as Pillow's `Image.resize((width, height), filter)`.
    public static func resize(_ image: RgbImage, width: Int, height: Int, filter: ResampleFilter) throws -> RgbImage {
        guard width > 0, height > 0 else { throw PolicyError("invalid_image", "cannot resize to \(width) x \(height)") }
        let horizontalFirst = !((image.height - height) > 0 && (image.height - height) > (image.width - width) * 2)
        var out = image
        if horizontalFirst {
            if width != out.width { out = horizontal(out, width, filter) }
            if height != out.height { out = vertical(out, height, filter) }
        } else {
            if height != out.height { out = vertical(out, height, filter) }
            if width != out.width { out = horizontal(out, width, filter) }
        }
        return out  // a value type: an unchanged image is already a copy
    }

    private static func horizontal(_ image: RgbImage, _ outWidth: Int, _ filter: ResampleFilter) -> RgbImage {
        let c = coefficients(inSize: image.width, outSize: outWidth, filter: filter)
        let src = image.rgb
        var out = [UInt8](repeating: 0, count: outWidth * image.height * 3)
        let half = 1 << (precisionBits - 1)
        for y in 0..<image.height {
            let rowIn = y * image.width * 3
            let rowOut = y * outWidth * 3
            for xx in 0..<outWidth {
                let xmin = c.bounds[xx * 2]
                let n = c.bounds[xx * 2 + 1]
                let kBase = xx * c.ksize
                var s0 = half
                var s1 = half
                var s2 = half
                for x in 0..<n {
                    let k = c.weights[kBase + x]
                    let p = rowIn + (x + xmin) * 3
                    s0 += Int(src[p]) * k
                    s1 += Int(src[p + 1]) * k
                    s2 += Int(src[p + 2]) * k
                }
                out[rowOut + xx * 3] = clip8(s0)
                out[rowOut + xx * 3 + 1] = clip8(s1)
                out[rowOut + xx * 3 + 2] = clip8(s2)
            }
        }
        return RgbImage(unchecked: outWidth, image.height, out)
    }

    private static func vertical(_ image: RgbImage, _ outHeight: Int, _ filter: ResampleFilter) -> RgbImage {
        let c = coefficients(inSize: image.height, outSize: outHeight, filter: filter)
        let src = image.rgb
        let stride = image.width * 3
        var out = [UInt8](repeating: 0, count: outHeight * stride)
        let half = 1 << (precisionBits - 1)
        for yy in 0..<outHeight {
            let ymin = c.bounds[yy * 2]
            let n = c.bounds[yy * 2 + 1]
            let kBase = yy * c.ksize
            for i in 0..<stride {  // every byte of the row: channels are independent
                var s = half
                for y in 0..<n {
                    s += Int(src[(y + ymin) * stride + i]) * c.weights[kBase + y]
                }
                out[yy * stride + i] = clip8(s)
            }
        }
        return RgbImage(unchecked: image.width, outHeight, out)
    }
}

/// Resize the shorter side to `resize`, centre-crop `crop` x `crop`, normalise with `mean`/`std`:
/// the transform the model was evaluated with, as the export manifest's `input` spec states it.
public struct EvalTransform {
    public let crop: Int
    public let resize: Int
    public let interpolation: String
    public let mean: [Float]
    public let std: [Float]
    public let filter: ResampleFilter

    public init(crop: Int, resize: Int, interpolation: String, mean: [Float], std: [Float]) throws {
        filter = try ResampleFilter.named(interpolation)
        guard crop > 0, resize > 0 else { throw PolicyError("invalid_transform", "crop (\(crop)) and resize (\(resize)) must be positive") }
        guard mean.count == 3, std.count == 3 else {
            throw PolicyError("invalid_transform", "mean and std need 3 values, got \(mean.count) and \(std.count)")
        }
        guard !std.contains(0) else { throw PolicyError("invalid_transform", "std must not be 0") }
        self.crop = crop
        self.resize = resize
        self.interpolation = interpolation
        self.mean = mean
        self.std = std
    }

    /// Size after the resize: shorter side `resize`, longer `int(resize * long / short)`; unchanged when short == resize.
    public func resizedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        let short = min(width, height)
        let long = max(width, height)
        if short == resize { return (width, height) }
        let newLong = Int(Double(resize * long) / Double(short))
        return width <= height ? (resize, newLong) : (newLong, resize)
    }

    /// The uint8 RGB crop (torchvision's Resize(int) + CenterCrop on Pillow images).
    public func resizeCrop(_ image: RgbImage) throws -> RgbImage {
        let (w, h) = resizedSize(width: image.width, height: image.height)
        var img = image
        if w != image.width || h != image.height {
            img = try Resample.resize(image, width: w, height: h, filter: filter)
        }
        if img.width < crop || img.height < crop { img = pad(img) }  // only when resize < crop; as torchvision, black
        let top = Int((Double(img.height - crop) / 2.0).rounded(.toNearestOrEven))  // Python round(): half to even
        let left = Int((Double(img.width - crop) / 2.0).rounded(.toNearestOrEven))
        var out = [UInt8](repeating: 0, count: crop * crop * 3)
        for y in 0..<crop {
            let from = ((top + y) * img.width + left) * 3
            out.replaceSubrange((y * crop * 3)..<((y + 1) * crop * 3), with: img.rgb[from..<(from + crop * 3)])
        }
        return RgbImage(unchecked: crop, crop, out)
    }

    private func pad(_ img: RgbImage) -> RgbImage {
        let w = max(img.width, crop)
        let h = max(img.height, crop)
        var out = [UInt8](repeating: 0, count: w * h * 3)
        let x0 = (w - img.width) / 2
        let y0 = (h - img.height) / 2
        for y in 0..<img.height {
            let to = ((y0 + y) * w + x0) * 3
            out.replaceSubrange(to..<(to + img.width * 3), with: img.rgb[(y * img.width * 3)..<((y + 1) * img.width * 3)])
        }
        return RgbImage(unchecked: w, h, out)
    }

    /// The cropped pixels -> normalised float32 CHW (3 x crop x crop).
    public func normalize(_ cropped: RgbImage) -> [Float] {
        let plane = cropped.width * cropped.height
        var out = [Float](repeating: 0, count: 3 * plane)
        for i in 0..<plane {
            for c in 0..<3 {
                out[c * plane + i] = (Float(cropped.rgb[3 * i + c]) / 255 - mean[c]) / std[c]
            }
        }
        return out
    }

    /// Decoded pixels of any size -> the model input (1 x 3 x crop x crop, flattened).
    public func apply(_ image: RgbImage) throws -> [Float] { try normalize(resizeCrop(image)) }

    /// Unpremultiplied RGBA bytes of any size -> the model input.
    public func apply(rgba: [UInt8], width: Int, height: Int) throws -> [Float] {
        try apply(RgbImage.fromRGBA(rgba, width: width, height: height))
    }

    public func describe() -> String { "resize the shorter side to \(resize) (\(interpolation)), centre-crop \(crop)x\(crop)" }

    /// timm: the shorter side is resized to floor(img_size / crop_pct).
    public static func resizeFor(imgSize: Int, cropPct: Double) throws -> Int {
        guard cropPct > 0.0, cropPct <= 1.0 else { throw PolicyError("invalid_transform", "crop_pct must be in (0, 1], got \(cropPct)") }
        return Int((Double(imgSize) / cropPct).rounded(.down))
    }

    /// From a manifest's `input` spec (`crop`, `resize`, `interpolation`, `mean`, `std`; `crop_pct`
    /// when `resize` is absent), missing fields from the model `config`. Manifests written before the
    /// transform was recorded state neither: then resize = crop = img_size, bilinear.
    public static func fromSpec(_ input: [String: Any], config: [String: Any]? = nil) throws -> EvalTransform {
        func source(_ key: String) -> Any? {
            if let v = input[key], !(v is NSNull) { return v }
            if let v = config?[key], !(v is NSNull) { return v }
            return nil
        }
        let imgSize: Int
        if let s = jsonNumber(input["img_size"]) {
            imgSize = Int(s)
        } else if let shape = input["shape"] as? [Any], let last = jsonNumber(shape.last) {
            imgSize = Int(last)
        } else if let s = jsonNumber(config?["img_size"]) {
            imgSize = Int(s)
        } else {
            throw PolicyError("invalid_transform", "the input spec names no image size")
        }
        let crop = jsonNumber(input["crop"]).map { Int($0) } ?? imgSize
        let resize: Int
        if let r = jsonNumber(input["resize"]) {
            resize = Int(r)
        } else if let pct = jsonNumber(source("crop_pct")) {
            resize = try resizeFor(imgSize: crop, cropPct: pct)
        } else {
            resize = crop
        }
        let interpolation = source("interpolation") as? String ?? "bilinear"
        func floats(_ key: String, _ fallback: [Float]) -> [Float] {
            guard let arr = source(key) as? [Any] else { return fallback }
            let out = arr.compactMap { jsonNumber($0).map(Float.init) }
            return out.count == arr.count ? out : fallback
        }
        return try EvalTransform(crop: crop, resize: resize, interpolation: interpolation,
                                 mean: floats("mean", [0.485, 0.456, 0.406]), std: floats("std", [0.229, 0.224, 0.225]))
    }
}

import Foundation
import XCTest
@testable import HydraPolicy
#if canImport(CryptoKit)
import CryptoKit
#endif

/// The transform vectors: $HYDRAVIT_TRANSFORM_VECTORS, else tests/transform_vectors.json of this repository.
func transformVectorsURL() -> URL {
    if let path = ProcessInfo.processInfo.environment["HYDRAVIT_TRANSFORM_VECTORS"] {
        return URL(fileURLWithPath: path)
    }
    // Tests/HydraPolicyTests/<file> -> HydraPolicy -> ios_demo -> repository root
    return URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("tests/transform_vectors.json")
}

/// Mirrors the Kotlin PreprocessTest: every vector's uint8 crop (sha256) and float tensor (checksums).
final class PreprocessVectorTests: XCTestCase {
    private func loadData() throws -> [String: Any] {
        let data = try Data(contentsOf: transformVectorsURL())
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    private func sha256(_ bytes: [UInt8]) throws -> String {
        #if canImport(CryptoKit)
        return SHA256.hash(data: Data(bytes)).map { String(format: "%02x", $0) }.joined()
        #else
        throw XCTSkip("sha256 needs CryptoKit")
        #endif
    }

    private func number(_ value: Any?) throws -> Double { try XCTUnwrap(jsonNumber(value)) }

    private func rgbOf(_ v: [String: Any]) throws -> RgbImage {
        let bytes = try XCTUnwrap(Data(base64Encoded: try XCTUnwrap(v["rgb"] as? String)))
        return try RgbImage(width: Int(try number(v["width"])), height: Int(try number(v["height"])), rgb: [UInt8](bytes))
    }

    /// Checks what the transform makes of one vector's pixels against its `expect` block.
    private func check(_ v: [String: Any], _ t: EvalTransform, _ image: RgbImage, tolerance: Double) throws {
        let name = v["name"] as? String ?? "?"
        let expect = try XCTUnwrap(v["expect"] as? [String: Any])
        let resized = try XCTUnwrap(expect["resized"] as? [Any]).map { Int(jsonNumber($0) ?? -1) }
        let size = t.resizedSize(width: image.width, height: image.height)
        XCTAssertEqual([size.width, size.height], resized, "\(name): resized size")
        let crop = try t.resizeCrop(image)
        XCTAssertEqual(crop.width, t.crop, name)
        XCTAssertEqual(try sha256(crop.rgb), expect["crop_sha256"] as? String, "\(name): sha256 of the uint8 crop")
        let x = try t.apply(image)
        let shape = try XCTUnwrap(expect["shape"] as? [Any]).map { Int(jsonNumber($0) ?? -1) }
        XCTAssertEqual(x.count, shape[0] * shape[1] * shape[2], "\(name): tensor size")
        var sum = 0.0
        var sumSq = 0.0
        for f in x {
            sum += Double(f)
            sumSq += Double(f) * Double(f)
        }
        func assertClose(_ want: Double, _ got: Double, _ what: String) {
            XCTAssertLessThanOrEqual(abs(got - want), tolerance * max(1.0, abs(want)), "\(name): \(what): expected \(want), got \(got)")
        }
        assertClose(try number(expect["sum"]), sum, "sum")
        assertClose(try number(expect["sum_sq"]), sumSq, "sum of squares")
        let plane = shape[1] * shape[2]
        for s in try XCTUnwrap(expect["samples"] as? [[Any]]) {
            let (c, y, xx) = try (Int(number(s[0])), Int(number(s[1])), Int(number(s[2])))
            assertClose(try number(s[3]), Double(x[c * plane + y * shape[2] + xx]), "x[\(c), \(y), \(xx)]")
        }
    }

    func testSharedVectors() throws {
        let data = try loadData()
        XCTAssertEqual(data["format"] as? String, "hydravit-edge-transform-vectors")
        let tolerance = try number(data["tolerance"])
        let vectors = try XCTUnwrap(data["vectors"] as? [[String: Any]])
        XCTAssertGreaterThanOrEqual(vectors.count, 10)
        for v in vectors {
            let spec = try XCTUnwrap(v["transform"] as? [String: Any])
            let t = try EvalTransform.fromSpec(spec)
            XCTAssertEqual(t.resize, Int(try number(spec["resize"])))
            XCTAssertEqual(t.crop, Int(try number(spec["crop"])))
            XCTAssertEqual(t.interpolation, spec["interpolation"] as? String)
            try check(v, t, try rgbOf(v), tolerance: tolerance)
        }
    }

    func testRGBADropsAlphaLikePillow() throws {
        let data = try loadData()
        let v = try XCTUnwrap((data["vectors"] as? [[String: Any]])?.first)
        let rgb = try rgbOf(v)
        var rgba = [UInt8](repeating: 0, count: rgb.width * rgb.height * 4)
        for i in 0..<(rgb.width * rgb.height) {
            rgba[4 * i] = rgb.rgb[3 * i]
            rgba[4 * i + 1] = rgb.rgb[3 * i + 1]
            rgba[4 * i + 2] = rgb.rgb[3 * i + 2]
            rgba[4 * i + 3] = UInt8((i * 37) & 0xFF)
        }
        let t = try EvalTransform.fromSpec(try XCTUnwrap(v["transform"] as? [String: Any]))
        try check(v, t, try RgbImage.fromRGBA(rgba, width: rgb.width, height: rgb.height), tolerance: try number(data["tolerance"]))
        XCTAssertEqual(try t.apply(rgb), try t.apply(rgba: rgba, width: rgb.width, height: rgb.height))
    }

    func testGreyExpandsToEqualChannels() throws {
        let img = try RgbImage.fromGrey([0, 127, 255, 64], width: 2, height: 2)
        XCTAssertEqual(img.rgb, [0, 0, 0, 127, 127, 127, 255, 255, 255, 64, 64, 64])
    }

    func testTheManifestStatesTheTransform() throws {
        let data = try loadData()
        let vectors = try XCTUnwrap(data["vectors"] as? [[String: Any]])
        var spec = try XCTUnwrap(vectors[1]["transform"] as? [String: Any])
        let crop = Int(try number(spec["crop"]))
        spec["shape"] = [1, 3, crop, crop]
        let config: [String: Any] = ["img_size": crop, "mean": spec["mean"]!, "std": spec["std"]!, "num_classes": 10]
        var json: [String: Any] = ["format": manifestFormat, "manifest_version": manifestVersion,
                                   "model": ["config": config], "input": spec, "targets": [String: Any]()]
        let t = try ExportManifest(json: json).transform
        XCTAssertEqual(t.resize, Int(try number(spec["resize"])))
        XCTAssertEqual(t.crop, crop)
        XCTAssertEqual(t.interpolation, spec["interpolation"] as? String)

        // an older manifest (no resize/crop/interpolation): resize = crop = img_size, bilinear
        json["input"] = ["shape": [1, 3, 28, 28], "mean": spec["mean"]!, "std": spec["std"]!] as [String: Any]
        let legacy = try ExportManifest(json: json).transform
        XCTAssertEqual(legacy.resize, 28)
        XCTAssertEqual(legacy.crop, 28)
        XCTAssertEqual(legacy.interpolation, "bilinear")
        // only crop_pct: timm's floor(img_size / crop_pct)
        let pct = try EvalTransform.fromSpec(["img_size": 224, "crop_pct": 0.875, "interpolation": "bicubic"])
        XCTAssertEqual(pct.resize, 256)
        XCTAssertEqual(pct.crop, 224)
    }

    func testUnsupportedFiltersAndBadPixelsAreRefused() {
        XCTAssertThrowsError(try EvalTransform(crop: 28, resize: 32, interpolation: "nearest", mean: [0, 0, 0], std: [1, 1, 1])) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("nearest") && message.contains("bicubic"), message)
        }
        XCTAssertThrowsError(try ResampleFilter.named("cubicle"))
        XCTAssertThrowsError(try RgbImage.fromRGBA([UInt8](repeating: 0, count: 5), width: 2, height: 3))
        XCTAssertThrowsError(try EvalTransform.resizeFor(imgSize: 28, cropPct: 1.5))
    }

    func testOnePassWhenOneSideKeepsItsSize() throws {
        // a single horizontal pass equals the row-by-row filter of a 1-pixel-high image
        let w = 9
        let rows = (0..<4).map { y in (0..<(w * 3)).map { i in UInt8((i * 29 + y * 71) & 0xFF) } }
        let img = try RgbImage(width: w, height: 4, rgb: rows.flatMap { $0 })
        let out = try Resample.resize(img, width: 5, height: 4, filter: .bicubic)
        let perRow = try rows.flatMap { try Resample.resize(try RgbImage(width: w, height: 1, rgb: $0), width: 5, height: 1, filter: .bicubic).rgb }
        XCTAssertEqual(out.rgb, perRow)
        // and a resize to the same size is a copy
        XCTAssertEqual(try Resample.resize(img, width: w, height: 4, filter: .bilinear).rgb, img.rgb)
    }

    func testPaddedWhenResizeIsBelowCrop() throws {
        // resize 4 < crop 6: black border as torchvision's CenterCrop pads
        let t = try EvalTransform(crop: 6, resize: 4, interpolation: "bilinear", mean: [0, 0, 0], std: [1, 1, 1])
        let crop = try t.resizeCrop(try RgbImage(width: 4, height: 4, rgb: [UInt8](repeating: 255, count: 48)))
        XCTAssertEqual(crop.width, 6)
        XCTAssertEqual(crop.rgb[0], 0)
        XCTAssertEqual(crop.rgb[(1 * 6 + 1) * 3], 255)
    }
}

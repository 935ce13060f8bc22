import Foundation
import XCTest
@testable import HydraPolicy

final class SupportTests: XCTestCase {
    func testPercentileMatchesThePythonHarness() {
        let s = LatencyStats(samplesMs: [5, 1, 3, 2, 4])
        XCTAssertEqual(s.medianMs, 3, accuracy: 1e-12)
        XCTAssertEqual(s.p90Ms, 4.6, accuracy: 1e-12)
        XCTAssertEqual(s.minMs, 1, accuracy: 1e-12)
        XCTAssertEqual(s.runs, 5)
    }

    func testReportFieldsAndAtomicWrite() throws {
        let device = DeviceInfo(name: "iPhone16,1", model: "iPhone16,1", os: "iOS 18.1", cpu: "iPhone16,1",
                                cpuCores: 6, memoryMb: 8000, runtimes: ["coreml": "iOS 18.1"])
        let b = ReportBuilder(device: device, manifestSha256: String(repeating: "a", count: 64), toolName: Contract.toolName,
                              toolVersion: "0.1.0", settings: ["runs": 20, "warmup": 3, "batch": 1])
        for k in [3, 6, 12] {
            b.add(ReportRow(k: k, backend: Contract.backendCoreML, artifact: Contract.coremlSingleFile, target: Contract.coremlTarget,
                            mode: "single", entry: Contract.coremlFunction(k), compute: "all",
                            latency: LatencyStats(samplesMs: (1...20).map { Double(k) * (1 + Double($0) / 100) }),
                            loadMs: 80, switchMs: k == 3 ? nil : 40, peakRssMb: 150))
        }
        b.add(ReportRow(k: 6, backend: Contract.backendCoreML, artifact: Contract.coremlSingleFile, mode: "single", compute: "all",
                        latency: LatencyStats(samplesMs: [6, 6.5, 7])))
        let json = b.json(created: Date(timeIntervalSince1970: 0))
        XCTAssertEqual(json["created"] as? String, "1970-01-01T00:00:00Z")
        let rows = try XCTUnwrap(json["rows"] as? [[String: Any]])
        XCTAssertEqual(rows.map { $0["k"] as? Int }, [3, 6, 12])
        XCTAssertTrue(rows[0]["switch_ms"] is NSNull)
        XCTAssertEqual(rows[0]["entry"] as? String, "k3")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        let url = try b.write(to: dir.appendingPathComponent(Contract.reportFile))
        let back = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any]
        XCTAssertEqual((back?["device"] as? [String: Any])?["platform"] as? String, "ios")
        if let out = ProcessInfo.processInfo.environment["HYDRAVIT_REPORT_OUT"] {
            try b.write(to: URL(fileURLWithPath: out))  // validated against the schema by the Python side
        }
    }

    func testPowerMappingImagingTopK() {
        XCTAssertNil(IOSPower.batteryPercent(level: -1))
        XCTAssertEqual(IOSPower.batteryPercent(level: 0.35)!, 35, accuracy: 1e-4)
        XCTAssertTrue(IOSPower.onPower(batteryStateRaw: 2))
        XCTAssertFalse(IOSPower.onPower(batteryStateRaw: 1))
        XCTAssertEqual((0...3).map { IOSPower.thermalState(rawValue: $0) }, ["nominal", "fair", "serious", "critical"])
        XCTAssertNil(IOSPower.thermalState(rawValue: 7))
        let chw = Imaging.chw(rgba: [255, 0, 255, 255], size: 1, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        XCTAssertEqual(chw, [1, -1, 1])
        XCTAssertEqual(Imaging.topK([0, 3, 1, 2], 2).map { $0.0 }, [1, 3])
    }

    func testManifestAndTableChoice() throws {
        let text = """
        {"format": "hydravit-edge-export", "manifest_version": 1,
         "model": {"config": {"img_size": 32, "num_classes": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                              "labels": ["a", "b", "c"]}},
         "targets": {"coreml": {"mode": "single", "artifacts": [
            {"k": 6, "file": "coreml/hydravit.mlpackage", "entry": "k6", "entry_kind": "function", "mode": "single",
             "inputs": [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}],
             "outputs": [{"name": "logits", "shape": [1, 3], "dtype": "float32"}]},
            {"k": 3, "file": "coreml/hydravit.mlpackage", "entry": "k3", "entry_kind": "function", "mode": "single"}]}}}
        """
        let m = try ExportManifest(data: Data(text.utf8))
        XCTAssertEqual(m.imgSize, 32)
        XCTAssertEqual(m.labels, ["a", "b", "c"])
        let recs = try m.artifacts(target: Contract.coremlTarget)
        XCTAssertEqual(recs.map { $0.entry }, ["k3", "k6"])
        XCTAssertEqual(recs[1].imageInput, "image")
        XCTAssertEqual(recs[1].logitsOutput, "logits")
        XCTAssertThrowsError(try m.artifacts(target: "onnx"))
        XCTAssertThrowsError(try ExportManifest(json: ["format": "hydravit-edge-export", "manifest_version": 2, "targets": [:]]))

        let vectors = try loadVectors()
        let lut = try Lut(json: (vectors["luts"] as! [String: Any])["B"] as! [String: Any])
        XCTAssertFalse(try Tables.choose(lut: lut, deviceName: "Tablet Pro 11", backend: "coreml").fallback)
        let report: [String: Any] = ["device": ["name": "iPhone16,1"], "rows": [
            ["k": 3, "backend": "coreml", "latency_p90_ms": 50.0], ["k": 6, "backend": "coreml", "latency_p90_ms": 90.0]]]
        let own = try Tables.choose(lut: lut, deviceName: "iPhone16,1", backend: "coreml", ownReport: report)
        XCTAssertEqual(own.device.latency, [3: 50, 6: 90])
        XCTAssertTrue(try Tables.choose(lut: lut, deviceName: "iPhone16,1", backend: "coreml").fallback)
    }
}

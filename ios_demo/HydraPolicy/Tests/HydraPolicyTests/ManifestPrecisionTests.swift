import Foundation
import XCTest
@testable import HydraPolicy

/// Entries per precision (coreml, coreml-int8, ...) and the policy over the options the app can run
/// (as the Kotlin ManifestPrecisionTest and hydravit_edge.runtime.Runtime).
final class ManifestPrecisionTests: XCTestCase {
    func manifest() throws -> ExportManifest {
        let text = """
        {"format": "hydravit-edge-export", "manifest_version": 1,
         "model": {"config": {"img_size": 32, "in_chans": 3, "num_classes": 3}, "heads": [3, 6]},
         "targets": {
           "coreml": {"target": "coreml", "precision": "fp32", "mode": "single", "artifacts": [
             {"k": 3, "file": "coreml/hydravit.mlpackage", "entry": "k3"}, {"k": 6, "file": "coreml/hydravit.mlpackage", "entry": "k6"}]},
           "coreml-int8": {"target": "coreml", "precision": "int8", "mode": "single", "artifacts": [
             {"k": 6, "file": "coreml-int8/hydravit.mlpackage", "entry": "k6"}, {"k": 3, "file": "coreml-int8/hydravit.mlpackage", "entry": "k3"}]},
           "coreml-fp16": {"target": "coreml", "precision": "fp16", "mode": "single", "artifacts": [
             {"k": 3, "file": "coreml-fp16/hydravit.mlpackage", "entry": "k3"}]},
           "onnx": {"mode": "single", "artifacts": [{"k": 3, "file": "onnx/hydravit.onnx"}]}
         }}
        """
        return try ExportManifest(data: Data(text.utf8))
    }

    func testEntriesPerPrecision() throws {
        let m = try manifest()
        XCTAssertEqual(m.variants(Contract.coremlTarget).map { $0.precision }, ["fp32", "fp16", "int8"])
        XCTAssertEqual(try m.keyFor(Contract.coremlTarget, precision: "int8"), "coreml-int8")
        XCTAssertEqual(m.variants("onnx").map { $0.key }, ["onnx"])  // no target/precision fields: the key at fp32
        XCTAssertThrowsError(try m.keyFor(Contract.coremlTarget, precision: "int8-static")) { error in
            XCTAssertEqual((error as? PolicyError)?.message,
                           "the export has no int8-static 'coreml' artifacts (precisions there: fp32, fp16, int8; " +
                           "export them with --precision int8-static)")
        }
        let int8 = try m.artifacts(target: "coreml-int8")
        XCTAssertEqual(int8.map { $0.k }, [3, 6])
        XCTAssertTrue(int8.allSatisfy { $0.precision == "int8" })
        XCTAssertEqual(try m.options(Contract.coremlTarget),
                       [OptionRef(k: 3, precision: "fp32"), OptionRef(k: 6, precision: "fp32"), OptionRef(k: 3, precision: "fp16"),
                        OptionRef(k: 3, precision: "int8"), OptionRef(k: 6, precision: "int8")])
    }

    func device(_ rows: [(Int, String, Double)]) throws -> LutDevice {
        let luts = try XCTUnwrap(try loadVectors()["luts"] as? [String: Any])
        let policy = try XCTUnwrap((luts["P"] as? [String: Any])?["policy"])
        let lut: [String: Any] = [
            "format": lutFormat, "schema_version": lutSchemaVersion, "policy": policy,
            "devices": [["name": "phone", "source": "measured", "backend": "coreml",
                         "rows": rows.map { (k, p, ms) -> [String: Any] in
                             ["k": k, "precision": p, "p90_ms": ms, "latency_basis": "p90",
                              "top1": 0.5 + 0.05 * Double(k) + (p == "fp32" ? 0.001 : 0)] }]],
        ]
        return try Lut(json: lut).device(named: "phone", backend: "coreml")
    }

    func testThePolicyPicksAmongWhatTheAppRuns() throws {
        let lut = try device([(3, "fp32", 10), (6, "fp32", 400), (3, "int8", 4), (6, "int8", 20)])
        let budget = PolicyInput(battery: 100, budgetMs: 50)
        let everything = try lut.stateFor(try manifest().options(Contract.coremlTarget))
        XCTAssertFalse(everything.standIn)
        let d = try everything.state.update(budget)
        XCTAssertEqual(OptionRef(k: d.k, precision: d.precision), OptionRef(k: 6, precision: "int8"))
        let fp32 = try lut.stateFor([OptionRef(k: 3, precision: "fp32"), OptionRef(k: 6, precision: "fp32")])
        XCTAssertEqual(Set(fp32.state.options.map { $0.precision }), ["fp32"])
        XCTAssertEqual(try fp32.state.update(budget).k, 3)
        let fp16 = try lut.stateFor([OptionRef(k: 3, precision: "fp16"), OptionRef(k: 6, precision: "fp16")])
        XCTAssertTrue(fp16.standIn)
        XCTAssertEqual(fp16.state.options.map { $0.p90Ms }, [10, 400])
        XCTAssertEqual(try fp16.state.update(budget).precision, "fp16")
        XCTAssertThrowsError(try lut.stateFor([OptionRef(k: 12, precision: "fp32")])) { error in
            XCTAssertEqual((error as? PolicyError)?.code, "no_common_k")
        }
    }
}

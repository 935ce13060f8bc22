import Foundation
import XCTest
@testable import HydraPolicy

/// (k, precision) options: references, the rank, the cap in latency (as tests/test_policy_precision.py).
final class PolicyOptionsTests: XCTestCase {
    func lutP() throws -> [String: Any] {
        let luts = try XCTUnwrap(try loadVectors()["luts"] as? [String: Any])
        return try XCTUnwrap(luts["P"] as? [String: Any])
    }

    func noBudget() throws -> PolicyConfig {
        var policy = try XCTUnwrap(try lutP()["policy"] as? [String: Any])
        policy["budget_ms"] = NSNull()
        return try PolicyConfig(json: policy)
    }

    func testReferences() {
        XCTAssertEqual(OptionRef.parse(6), OptionRef(k: 6))
        XCTAssertEqual(OptionRef.parse("6@int8"), OptionRef(k: 6, precision: "int8"))
        XCTAssertEqual(OptionRef.parse(" 12 @ int8-static "), OptionRef(k: 12, precision: "int8-static"))
        XCTAssertEqual(OptionRef.parse(["k": 6, "precision": "fp16"] as [String: Any]), OptionRef(k: 6, precision: "fp16"))
        XCTAssertNil(OptionRef.parse("six"))
        XCTAssertNil(OptionRef.parse("6"))
        XCTAssertNil(OptionRef.parse(0))
        XCTAssertNil(OptionRef.parse(["k": 6, "x": 1] as [String: Any]))
        XCTAssertNil(OptionRef.parse(["k": "6"] as [String: Any]))
        let opts = [PolicyOption(k: 6, precision: "int8", p90Ms: 1), PolicyOption(k: 6, precision: "fp16", p90Ms: 2),
                    PolicyOption(k: 3, precision: "fp32", p90Ms: 1)]
        XCTAssertEqual(OptionRef(k: 6).resolve(opts)?.precision, "fp16")
        XCTAssertEqual(OptionRef(k: 3).resolve(opts)?.precision, "fp32")
        XCTAssertNil(OptionRef(k: 6, precision: "fp32").resolve(opts))
    }

    func testRankTiesFollowThePrecisionOrder() throws {
        let same = ["int8-static", "int8", "fp16", "fp32", "bf16"].map { PolicyOption(k: 6, precision: $0, p90Ms: 5) }
        XCTAssertEqual(same.sorted(by: Ranking(same).before).map { $0.precision }, ["fp32", "fp16", "int8", "int8-static", "bf16"])
        XCTAssertEqual(try Policy.decide(options: same, policy: noBudget(), inputs: PolicyInput(battery: 100)).precision, "fp32")
        let mixed = [PolicyOption(k: 3, precision: "fp32", p90Ms: 5, top1: 0.9), PolicyOption(k: 6, precision: "int8", p90Ms: 4)]
        XCTAssertEqual(try Policy.decide(options: mixed, policy: noBudget(), inputs: PolicyInput(battery: 100)).k, 6)
    }

    func testUnmeasuredLatencyKeepsTheCapsInK() throws {
        let state = try PolicyState(latency: [3: 0, 6: 0, 12: 0], policy: noBudget())
        XCTAssertEqual(try [100.0, 30.0, 10.0].map { try state.update(PolicyInput(battery: $0)).k }, [12, 6, 3])
    }

    func testBadOptions() throws {
        let policy = try noBudget()
        XCTAssertThrowsError(try Policy.decide(options: [PolicyOption(k: 3, p90Ms: 1), PolicyOption(k: 3, p90Ms: 2)],
                                               policy: policy, inputs: PolicyInput())) { error in
            XCTAssertEqual((error as? PolicyError)?.code, "invalid_table")
        }
        XCTAssertThrowsError(try Policy.decide(options: [PolicyOption(k: 3, p90Ms: 1, frontier: false)],
                                               policy: policy, inputs: PolicyInput())) { error in
            XCTAssertEqual((error as? PolicyError)?.code, "empty_table")
        }
        XCTAssertThrowsError(try PolicyInput(json: ["materialized": ["six"]]).checked()) { error in
            XCTAssertEqual((error as? PolicyError)?.code, "invalid_switch_state")
        }
    }

    func testPrecisionRowsAndTheReason() throws {
        let lut = try Lut(json: try lutP())
        let dev = try lut.device(named: "frontier-phone")
        XCTAssertEqual(dev.options.filter { !$0.frontier }.map { $0.ref },
                       [OptionRef(k: 6, precision: "fp32"), OptionRef(k: 9, precision: "fp32"), OptionRef(k: 9, precision: "fp16")])
        XCTAssertEqual(dev.latency, [3: 6, 6: 12, 9: 18, 12: 24])
        let d = try lut.device(named: "mixed-phone").decide(PolicyInput(battery: 35))
        XCTAssertEqual(d.k, 9)
        XCTAssertEqual(d.precision, "int8")
        XCTAssertEqual(d.capMs, 12)
        XCTAssertTrue(d.reason.contains("k=9 int8") && d.reason.contains("within k=6's 12 ms"), d.reason)
        XCTAssertEqual(try lut.device(named: "fp16-board").precisions, ["fp16"])
    }

    func testOwnReportRowsKeepTheirPrecision() throws {
        let report: [String: Any] = ["device": ["name": "iPhone16,1"], "rows": [
            ["k": 6, "backend": "coreml", "precision": "fp32", "latency_p90_ms": 20.0],
            ["k": 6, "backend": "coreml", "precision": "int8", "latency_p90_ms": 9.0,
             "accuracy": ["dataset": "d", "top1": 0.7]]]]
        let entry = try XCTUnwrap(Tables.entryFromReport(report, backend: "coreml"))
        let dev = try LutDevice(entry: entry, policy: try noBudget())
        XCTAssertEqual(dev.options.map { $0.ref }, [OptionRef(k: 6, precision: "fp32"), OptionRef(k: 6, precision: "int8")])
        XCTAssertEqual(dev.options[1].top1, 0.7)
    }
}

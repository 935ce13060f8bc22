import Foundation
import XCTest
@testable import HydraPolicy

/// The shared vectors: $HYDRAVIT_POLICY_VECTORS, else tests/policy_vectors.json of this repository.
func vectorsURL() -> URL {
    if let path = ProcessInfo.processInfo.environment["HYDRAVIT_POLICY_VECTORS"] {
        return URL(fileURLWithPath: path)
    }
    // Tests/HydraPolicyTests/<file> -> HydraPolicy -> ios_demo -> repository root
    return URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("tests/policy_vectors.json")
}

func loadVectors() throws -> [String: Any] {
    let data = try Data(contentsOf: vectorsURL())
    return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
}

/// nil as JSON null, so expectations of null compare like the Python and Kotlin runners.
func boxed(_ value: Any?) -> Any { value ?? NSNull() }

final class PolicyVectorTests: XCTestCase {
    /// Runs one case like tests/test_policy.py: one state per case; a step that throws leaves the state unchanged;
    /// 'previous' is an option reference (k, "k@precision" or {k, precision}).
    func run(_ testCase: [String: Any], luts: [String: Any]) throws -> [[String: Any]] {
        let lut = try Lut(json: try XCTUnwrap(luts[testCase["lut"] as! String] as? [String: Any]))
        var state: PolicyState?
        var out: [[String: Any]] = []
        for step in testCase["steps"] as! [[String: Any]] {
            do {
                if state == nil {
                    state = try lut.device(named: testCase["device"] as! String, backend: testCase["backend"] as? String).state()
                }
                if let prev = step["previous_k"] as? Int { state!.previousK = prev }
                if let prev = step["previous"] {
                    guard let ref = OptionRef.parse(prev) else {
                        throw PolicyError("invalid_previous", "previous must be k, 'k@precision' or {k, precision}")
                    }
                    state!.previous = ref
                }
                let d = try state!.update(PolicyInput(json: step["input"] as! [String: Any]))
                out.append(["k": d.k, "precision": d.precision, "limit": d.limit, "band": boxed(d.band),
                            "fits_budget": boxed(d.fitsBudget)])
            } catch let e as PolicyError {
                out.append(["error": e.code])
            }
        }
        return out
    }

    func testSharedVectors() throws {
        let vectors = try loadVectors()
        let luts = try XCTUnwrap(vectors["luts"] as? [String: Any])
        let cases = try XCTUnwrap(vectors["cases"] as? [[String: Any]])
        XCTAssertGreaterThanOrEqual(cases.count, 40)
        var checked = 0
        for testCase in cases {
            let name = testCase["name"] as! String
            let got = try run(testCase, luts: luts)
            for (i, step) in (testCase["steps"] as! [[String: Any]]).enumerated() {
                let expect = step["expect"] as! [String: Any]
                for (key, want) in expect {
                    let have = got[i][key]
                    let context = "case '\(name)' step \(i) field \(key)"
                    switch want {
                    case is NSNull:
                        XCTAssertTrue(have is NSNull, context)
                    case let s as String:
                        XCTAssertEqual(have as? String, s, context)
                    case let n as NSNumber where key == "fits_budget":
                        XCTAssertEqual(have as? Bool, n.boolValue, context)
                    case let n as NSNumber:
                        XCTAssertEqual(have as? Int, n.intValue, context)
                    default:
                        XCTFail("unexpected expectation \(want) in \(context)")
                    }
                }
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, cases.count)
    }

    func testCapForFraction() {
        XCTAssertEqual(Policy.capForFraction([3, 6, 12], 0), 3)
        XCTAssertEqual(Policy.capForFraction([3, 6, 12], 0.5), 6)
        XCTAssertEqual(Policy.capForFraction(Array(1...100), 0.29), 29)
    }

    func testBadPolicyAndUnknownDevice() throws {
        let vectors = try loadVectors()
        var lutA = (vectors["luts"] as! [String: Any])["A"] as! [String: Any]
        let lut = try Lut(json: lutA)
        XCTAssertThrowsError(try lut.device(named: "nope")) { error in
            XCTAssertEqual((error as? PolicyError)?.code, "unknown_device")
            XCTAssertTrue("\(error)".contains("fast-phone, slow-board"))
        }
        var policy = lutA["policy"] as! [String: Any]
        policy["battery_bands"] = [["name": "x", "min_percent": 10, "max_k_fraction": 1]]
        lutA["policy"] = policy
        XCTAssertThrowsError(try Lut(json: lutA)) { error in
            XCTAssertEqual((error as? PolicyError)?.code, "invalid_policy")
        }
        XCTAssertThrowsError(try Lut(json: ["format": "other"])) { error in
            XCTAssertEqual((error as? PolicyError)?.code, "invalid_lut")
        }
    }
}

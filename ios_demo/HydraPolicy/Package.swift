// swift-tools-version:5.9
// The policy, lut.json / manifest.json readers and the report writer of the iOS demo, with no
// UIKit or Core ML dependency: `swift test` runs the shared vectors (../../tests/policy_vectors.json).
import PackageDescription

let package = Package(
    name: "HydraPolicy",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "HydraPolicy", targets: ["HydraPolicy"]),
    ],
    targets: [
        .target(name: "HydraPolicy"),
        .testTarget(name: "HydraPolicyTests", dependencies: ["HydraPolicy"]),
    ]
)

import Foundation

/// Names shared with the rest of hydravit-edge. tests/test_app_contract.py reads these
/// `static let`s and checks them against the exporter (artifact files, Core ML function names),
/// the manifest/LUT/report schemas.
public enum Contract {
    /// Folder reference in the app bundle holding manifest.json, lut.json and the Core ML package.
    public static let resourceDir = "hydravit"
    public static let manifestFile = "manifest.json"
    public static let lutFile = "lut.json"
    /// Optional sample images (PNG/JPEG) under resourceDir.
    public static let samplesDir = "samples"

    /// Export target (manifest `targets` key) and its single multifunction package.
    public static let coremlTarget = "coreml"
    public static let coremlSingleFile = "coreml/hydravit.mlpackage"
    /// Core ML function of k in the multifunction package: k3, k4, ... (MLModelConfiguration.functionName).
    public static let coremlFunctionPrefix = "k"
    public static let imageInput = "image"
    public static let logitsOutput = "logits"

    /// Report rows' backend name (bench/schemas/report.schema.json).
    public static let backendCoreML = "coreml"
    /// Written to the app's Documents folder by benchmark mode.
    public static let reportFile = "hydravit-bench-report.json"
    public static let toolName = "hydravit-edge-ios"
    /// Launch arguments (UserDefaults): -benchmark YES -runs 30 -warmup 5
    public static let argBenchmark = "benchmark"
    public static let argRuns = "runs"
    public static let argWarmup = "warmup"

    public static func coremlFunction(_ k: Int) -> String { "\(coremlFunctionPrefix)\(k)" }
}

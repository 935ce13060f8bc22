import CoreML
import CryptoKit
import Foundation
import HydraPolicy

struct DemoError: LocalizedError {
    let message: String
    var errorDescription: String? { message }
}

/// The multifunction Core ML package of the export at one precision (manifest entry coreml,
/// coreml-fp16, coreml-int8): one function per k (`k3`, `k4`, ...), chosen
/// with MLModelConfiguration.functionName (iOS 18). The package is compiled once on first launch
/// (cached under Application Support, keyed by the manifest's hash); a function is loaded when k
/// first needs it and the last few stay loaded, so switching back is free.
actor CoreMLEngine {
    let records: [ArtifactInfo]
    let ks: [Int]
    let mode: String
    let precision: String
    let imgSize: Int
    let inChans: Int
    /// Time to compile the package(s) on this launch (0 when the compiled model was cached).
    let compileMs: Double
    private let compiled: [String: URL]
    private let computeUnits: MLComputeUnits
    private var models: [Int: MLModel] = [:]
    private var recent: [Int] = []
    static let keepLoaded = 3

    private init(records: [ArtifactInfo], compiled: [String: URL], imgSize: Int, inChans: Int, compileMs: Double,
                 computeUnits: MLComputeUnits, precision: String) {
        self.records = records
        self.ks = records.map { $0.k }
        self.mode = records.first?.mode ?? "single"
        self.precision = precision
        self.compiled = compiled
        self.imgSize = imgSize
        self.inChans = inChans
        self.compileMs = compileMs
        self.computeUnits = computeUnits
    }

    static func open(resources: URL, manifest: ExportManifest, manifestData: Data, precision: String = "fp32",
                     computeUnits: MLComputeUnits = .all) async throws -> CoreMLEngine {
        let all = try manifest.artifacts(target: try manifest.keyFor(Contract.coremlTarget, precision: precision))
        let single = all.filter { $0.mode == "single" }
        let records = single.isEmpty ? all : single
        guard !records.isEmpty else { throw DemoError(message: "the export has no Core ML artifacts") }
        let key = SHA256.hash(data: manifestData).prefix(8).map { String(format: "%02x", $0) }.joined()
        let start = DispatchTime.now().uptimeNanoseconds
        var compiled: [String: URL] = [:]
        var didCompile = false
        for file in Set(records.map { $0.file }) {
            let (url, fresh) = try await compile(resources.appendingPathComponent(file), key: key,
                                                 name: file.replacingOccurrences(of: "/", with: "_"))
            compiled[file] = url
            didCompile = didCompile || fresh
        }
        let ms = didCompile ? Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 : 0
        return CoreMLEngine(records: records, compiled: compiled, imgSize: manifest.imgSize, inChans: manifest.inChans,
                            compileMs: ms, computeUnits: computeUnits, precision: precision)
    }

    /// `name`: the package's path in the export, flattened (coreml_hydravit.mlpackage, coreml-int8_...):
    /// every precision's package is called hydravit.mlpackage, so the cache names them by folder too.
    private static func compile(_ package: URL, key: String, name: String) async throws -> (URL, Bool) {
        guard FileManager.default.fileExists(atPath: package.path) else {
            throw DemoError(message: "\(package.lastPathComponent) is not in the app bundle (see ios_demo/README.md)")
        }
        let cache = try FileManager.default.url(for: .applicationSupportDirectory, in: .userDomainMask,
                                                appropriateFor: nil, create: true)
            .appendingPathComponent("hydravit-\(key)", isDirectory: true)
        let target = cache.appendingPathComponent((name as NSString).deletingPathExtension + ".mlmodelc")
        if FileManager.default.fileExists(atPath: target.path) { return (target, false) }
        let temporary = try await MLModel.compileModel(at: package)
        try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: target)
        try FileManager.default.moveItem(at: temporary, to: target)
        return (target, true)
    }

    func record(_ k: Int) throws -> ArtifactInfo {
        guard let r = records.first(where: { $0.k == k }) else {
            throw DemoError(message: "k=\(k) is not exported at \(precision) (have \(ks))")
        }
        return r
    }

    /// Loads k's function unless loaded; returns the load time in ms (0 when it was loaded already).
    @discardableResult
    func prepare(_ k: Int) throws -> Double {
        if models[k] != nil {
            recent.removeAll { $0 == k }
            recent.append(k)
            return 0
        }
        let rec = try record(k)
        let config = MLModelConfiguration()
        config.computeUnits = computeUnits
        if let function = rec.entry {
            config.functionName = function
        }
        guard let url = compiled[rec.file] else { throw DemoError(message: "\(rec.file) was not compiled") }
        let start = DispatchTime.now().uptimeNanoseconds
        models[k] = try MLModel(contentsOf: url, configuration: config)
        let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        recent.append(k)
        while recent.count > Self.keepLoaded {
            models[recent.removeFirst()] = nil
        }
        return ms
    }

    /// Forget every loaded function (the benchmark measures each load).
    func unloadAll() {
        models.removeAll()
        recent.removeAll()
    }

    func predict(_ input: [Float], k: Int) throws -> [Float] {
        try prepare(k)
        let rec = try record(k)
        guard let model = models[k] else { throw DemoError(message: "k=\(k) is not loaded") }
        let shape = [1, inChans, imgSize, imgSize].map { NSNumber(value: $0) }
        let array = try MLMultiArray(shape: shape, dataType: .float32)
        array.withUnsafeMutableBufferPointer(ofType: Float.self) { buffer, _ in
            for i in 0..<min(buffer.count, input.count) {
                buffer[i] = input[i]
            }
        }
        let features = try MLDictionaryFeatureProvider(dictionary: [rec.imageInput: MLFeatureValue(multiArray: array)])
        let output = try model.prediction(from: features)
        let logits = output.featureValue(for: rec.logitsOutput)?.multiArrayValue
            ?? output.featureNames.sorted().compactMap { output.featureValue(for: $0)?.multiArrayValue }.first
        guard let logits else { throw DemoError(message: "the model returned no logits") }
        return (0..<logits.count).map { logits[$0].floatValue }
    }

    /// `count` timed predictions of k, in ms (timed inside the actor: no hop in the figures).
    func time(_ input: [Float], k: Int, count: Int) throws -> [Double] {
        try (0..<count).map { _ in
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try predict(input, k: k)
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        }
    }
}

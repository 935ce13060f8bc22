import Foundation

// Read access to the export's manifest.json (export/schemas/manifest.schema.json): model input
// spec, labels, and per target the artifact records (`file` relative to the manifest, `entry` =
// Core ML function / ExecuTorch method / TFLite signature, `mode`, inputs/outputs).
// Mirrors the Python reader hydravit_edge.contract.manifest.Manifest (the schema is generated from it).

public struct TensorInfo: Equatable {
    public let name: String
    public let dtype: String
}

public struct ArtifactInfo: Equatable {
    public let k: Int
    public let file: String
    public let entry: String?
    public let entryKind: String
    public let mode: String
    public let inputs: [TensorInfo]
    public let outputs: [TensorInfo]
    /// The entry's precision (fp32, fp16, int8, int8-static).
    public var precision: String = "fp32"

    /// The input holding the image (named `image`, else the first float input).
    public var imageInput: String {
        inputs.first { $0.name == Contract.imageInput }?.name ?? inputs.first { $0.dtype.hasPrefix("float") }?.name ?? Contract.imageInput
    }

    public var logitsOutput: String { outputs.first?.name ?? Contract.logitsOutput }
}

public let manifestFormat = "hydravit-edge-export"
public let manifestVersion = 1

public struct ExportManifest {
    public let json: [String: Any]
    private let config: [String: Any]
    private let input: [String: Any]
    private let targets: [String: Any]

    public init(json: [String: Any]) throws {
        guard json["format"] as? String == manifestFormat else {
            throw PolicyError("invalid_manifest", "not a hydravit-edge export manifest (format '\(json["format"] ?? "none")')")
        }
        guard let version = jsonNumber(json["manifest_version"]), Int(version) == manifestVersion else {
            throw PolicyError("invalid_manifest", "manifest_version \(json["manifest_version"] ?? "none") is not supported (this app reads \(manifestVersion))")
        }
        guard let targets = json["targets"] as? [String: Any] else {
            throw PolicyError("invalid_manifest", "not a hydravit-edge export manifest (no 'targets')")
        }
        let model = json["model"] as? [String: Any] ?? [:]
        self.json = json
        self.config = model["config"] as? [String: Any] ?? model
        self.input = json["input"] as? [String: Any] ?? [:]
        self.targets = targets
    }

    public init(data: Data) throws {
        guard let obj = try? JSONSerialization.jsonObject(with: data), let json = obj as? [String: Any] else {
            throw PolicyError("invalid_manifest", "manifest.json is not a JSON object")
        }
        try self.init(json: json)
    }

    public var imgSize: Int {
        if let s = jsonNumber(input["img_size"]) { return Int(s) }
        if let shape = input["shape"] as? [Any], let last = jsonNumber(shape.last) { return Int(last) }
        return Int(jsonNumber(config["img_size"]) ?? 224)
    }

    public var inChans: Int {
        if let shape = input["shape"] as? [Any], shape.count == 4, let c = jsonNumber(shape[1]) { return Int(c) }
        return Int(jsonNumber(config["in_chans"]) ?? 3)
    }

    public var mean: [Float] { floats(input["mean"]) ?? floats(config["mean"]) ?? [0.485, 0.456, 0.406] }
    public var std: [Float] { floats(input["std"]) ?? floats(config["std"]) ?? [0.229, 0.224, 0.225] }

    /// The model's evaluation transform from `input.resize`, `input.crop`, `input.interpolation`, mean
    /// and std (Preprocess.swift); manifests without them: resize = crop = img_size, bilinear.
    public var transform: EvalTransform {
        get throws { try EvalTransform.fromSpec(input, config: config) }
    }
    public var numClasses: Int { Int(jsonNumber(config["num_classes"]) ?? 0) }

    public var labels: [String] {
        if let l = (json["labels"] as? [Any]) ?? (config["labels"] as? [Any]) { return l.map { "\($0)" } }
        return (0..<numClasses).map { "class \($0)" }
    }

    public var targetNames: [String] { targets.keys.sorted() }

    public func hasTarget(_ name: String) -> Bool { targets[name] != nil }

    /// The export target of entry `key` (`coreml-int8` -> `coreml`): its `target`, else the key.
    public func baseTarget(_ key: String) -> String {
        ((targets[key] as? [String: Any])?["target"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? key
    }

    /// The precision of entry `key` (fp32 when the entry does not say).
    public func precision(_ key: String) -> String {
        ((targets[key] as? [String: Any])?["precision"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? "fp32"
    }

    /// (precision, entry key) of `target`'s artifacts, in the precision order (others after, by name).
    public func variants(_ target: String) -> [(precision: String, key: String)] {
        targetNames.filter { baseTarget($0) == target }.map { (precision: precision($0), key: $0) }
            .sorted { precisionBefore($0.precision, $1.precision) }
    }

    /// The entry key of `target` at `precision`; an error naming the precisions there are.
    public func keyFor(_ target: String, precision: String = "fp32") throws -> String {
        let found = variants(target)
        guard let hit = found.first(where: { $0.precision == precision }) else {
            let have = found.isEmpty ? "none" : found.map { $0.precision }.joined(separator: ", ")
            throw PolicyError("invalid_manifest", "the export has no \(precision) '\(target)' artifacts (precisions there: " +
                              "\(have); export them with --precision \(precision))")
        }
        return hit.key
    }

    /// The (k, precision) options of `target`: every record of each of its precisions.
    public func options(_ target: String) throws -> [OptionRef] {
        var out: [OptionRef] = []
        for v in variants(target) {
            for r in try artifacts(target: v.key) where !out.contains(OptionRef(k: r.k, precision: r.precision)) {
                out.append(OptionRef(k: r.k, precision: r.precision))
            }
        }
        return out
    }

    /// The records of entry `target` (a key: coreml, coreml-int8, ...), sorted by k.
    public func artifacts(target: String) throws -> [ArtifactInfo] {
        guard let t = targets[target] as? [String: Any] else {
            throw PolicyError("invalid_manifest", "the export has no '\(target)' artifacts (it has: \(targetNames.joined(separator: ", ")))")
        }
        let defaultMode = t["mode"] as? String ?? "per-k"
        let records = t["artifacts"] as? [[String: Any]] ?? []
        let precision = precision(target)
        return try records.map { r in
            guard let k = jsonNumber(r["k"]), let file = r["file"] as? String else {
                throw PolicyError("invalid_manifest", "an artifact record needs k and file")
            }
            return ArtifactInfo(k: Int(k), file: file, entry: r["entry"] as? String,
                                entryKind: r["entry_kind"] as? String ?? "graph", mode: r["mode"] as? String ?? defaultMode,
                                inputs: tensors(r["inputs"]), outputs: tensors(r["outputs"]), precision: precision)
        }.sorted { $0.k < $1.k }
    }

    private func floats(_ value: Any?) -> [Float]? {
        guard let arr = value as? [Any] else { return nil }
        let out = arr.compactMap { jsonNumber($0).map(Float.init) }
        return out.count == arr.count ? out : nil
    }

    private func tensors(_ value: Any?) -> [TensorInfo] {
        (value as? [[String: Any]] ?? []).compactMap { t in
            (t["name"] as? String).map { TensorInfo(name: $0, dtype: t["dtype"] as? String ?? "float32") }
        }
    }
}

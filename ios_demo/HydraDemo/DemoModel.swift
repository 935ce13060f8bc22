import Foundation
import HydraPolicy
import ImageIO
import SwiftUI
import UIKit

/// The demo's state: loads manifest.json, lut.json and the Core ML package from the bundle's
/// `hydravit` folder, then every second reads the power state, asks the policy for (k, precision)
/// (unless pinned), runs the current sample and shows k, the reason, the latency and the top-5.
/// The options are the (k, precision) pairs the bundled export holds (manifest entries coreml,
/// coreml-fp16, coreml-int8); one precision's package is open at a time.
/// Launched with `-benchmark YES [-runs 30] [-warmup 5]` it runs the benchmark first.
@MainActor
final class DemoModel: ObservableObject {
    @Published var powerText = ""
    @Published var decisionText = "loading..."
    @Published var resultText = ""
    @Published var benchmarkStatus = ""
    @Published var ks: [Int] = []
    @Published var options: [OptionRef] = []
    @Published var image: UIImage?
    @Published var isBenchmarking = false
    @Published var pinned: OptionRef? = nil {
        didSet { if pinned == nil { policy?.reset() } }
    }

    private let power = PowerMonitor()
    private var engine: CoreMLEngine?
    private var manifest: ExportManifest?
    private var transform: EvalTransform?
    private var manifestData = Data()
    private var resources: URL?
    private var lut: Lut?
    private var policy: PolicyState?
    private var tableNote = ""
    private var samples: [URL] = []
    private var sampleIndex = 0
    private var input: [Float] = []
    private var inputLabel = ""
    private var timer: Timer?
    private var busy = false

    func start() async {
        guard engine == nil else { return }
        guard let dir = Bundle.main.url(forResource: Contract.resourceDir, withExtension: nil),
              FileManager.default.fileExists(atPath: dir.appendingPathComponent(Contract.manifestFile).path) else {
            decisionText = "No model bundled. Copy the export and lut.json into HydraDemo/Resources/\(Contract.resourceDir)/ "
                + "(see ios_demo/README.md) and rebuild."
            return
        }
        do {
            let data = try Data(contentsOf: dir.appendingPathComponent(Contract.manifestFile))
            let m = try ExportManifest(data: data)
            let t = try m.transform  // refuses an interpolation the app does not implement, e.g. nearest
            decisionText = "compiling and loading the Core ML package..."
            resources = dir
            manifest = m
            transform = t
            manifestData = data
            options = try m.options(Contract.coremlTarget)
            guard !options.isEmpty else { throw DemoError(message: "the export has no Core ML artifacts") }
            ks = Array(Set(options.map { $0.k })).sorted()
            let first = chooseTable()
            let e = try await engineFor(first.precision ?? "fp32")
            let loadMs = try await e.prepare(first.k)
            let sampleDir = dir.appendingPathComponent(Contract.samplesDir)
            samples = ((try? FileManager.default.contentsOfDirectory(at: sampleDir, includingPropertiesForKeys: nil)) ?? [])
                .filter { ["png", "jpg", "jpeg"].contains($0.pathExtension.lowercased()) }
                .sorted { $0.lastPathComponent < $1.lastPathComponent }
            nextImage()
            let precisions = m.variants(Contract.coremlTarget).map { $0.precision }.joined(separator: "/")
            decisionText = "loaded \(e.mode) \(e.precision) Core ML package (k \(e.ks.first!)...\(e.ks.last!)) in \(Int(loadMs)) ms; " +
                "options: \(precisions); \(tableNote)"
            if UserDefaults.standard.bool(forKey: Contract.argBenchmark) {
                await runBenchmark()
            }
            timer = Timer.scheduledTimer(withTimeInterval: 1, repeats: true) { [weak self] _ in
                Task { @MainActor in await self?.step() }
            }
        } catch {
            decisionText = "error: \(error.localizedDescription)"
        }
    }

    /// The largest k, at its first precision (fp32 where bundled).
    private func defaultOption() -> OptionRef {
        let top = options.map { $0.k }.max() ?? 0
        return options.first { $0.k == top } ?? OptionRef(k: top)
    }

    /// The engine of `precision`, opened on first use; the engine of another precision is released.
    private func engineFor(_ precision: String) async throws -> CoreMLEngine {
        if let engine, engine.precision == precision { return engine }
        guard let manifest, let resources else { throw DemoError(message: "no export loaded") }
        engine = nil
        let e = try await CoreMLEngine.open(resources: resources, manifest: manifest, manifestData: manifestData,
                                            precision: precision)
        engine = e
        return e
    }

    /// The policy over the bundled options; returns the option to build first (the policy's pick).
    private func chooseTable() -> OptionRef {
        guard let dir = resources else { return defaultOption() }
        guard let data = try? Data(contentsOf: dir.appendingPathComponent(Contract.lutFile)) else {
            tableNote = "no \(Contract.lutFile) bundled: auto uses the largest k"
            return defaultOption()
        }
        do {
            let table = try Lut(data: data)
            lut = table
            let choice = try Tables.choose(lut: table, deviceName: DeviceFacts.modelIdentifier, backend: Contract.backendCoreML,
                                           ownReport: BenchmarkRunner.lastReport())
            let runnable = try choice.device.stateFor(options)
            policy = runnable.state
            tableNote = "latencies: \(choice.source)" + (choice.fallback ? " - run the benchmark on this device" : "")
                + (runnable.standIn ? " (no rows of the bundled precisions: its latencies per k stand in)" : "")
            let d = try Policy.decide(options: runnable.state.options, policy: runnable.state.policy, inputs: power.read())
            return OptionRef(k: d.k, precision: d.precision)
        } catch {
            tableNote = "lut.json unusable: \(error)"
            return defaultOption()
        }
    }

    func step() async {
        guard !options.isEmpty, !busy, !isBenchmarking, !input.isEmpty else { return }
        busy = true
        defer { busy = false }
        let inputs = power.read()
        let battery = inputs.battery.map { "\(Int($0.rounded()))%" } ?? "unknown"
        powerText = "battery \(battery), \(inputs.charging ? "charging" : "on battery"), low power \(inputs.lowPower ? "on" : "off"), thermal \(inputs.thermal ?? "unknown")"
        var decision: Decision?
        do {
            decision = try policy?.update(inputs)
        } catch {
            decisionText = "policy error: \(error)"
        }
        let option = pinned ?? decision.map { OptionRef(k: $0.k, precision: $0.precision) } ?? defaultOption()
        let k = option.k
        let why = pinned != nil ? "pinned by hand" : decision.map { "limited by \($0.limit): \($0.reason)" } ?? tableNote
        do {
            let engine = try await engineFor(option.precision ?? "fp32")
            let start = DispatchTime.now().uptimeNanoseconds
            let logits = try await engine.predict(input, k: k)
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            let labels = manifest?.labels ?? []
            let top = Imaging.topK(logits, 5).map { index, p in
                "  \(index < labels.count ? labels[index] : "class \(index)")  \(String(format: "%.1f", 100 * p))%"
            }.joined(separator: "\n")
            decisionText = "k = \(k) of \(ks.last ?? k), \(engine.precision)\n\(why)\n\(tableNote)"
            resultText = "\(String(format: "%.1f", ms)) ms (incl. a function load after a switch) for \(inputLabel)\ntop-5:\n\(top)"
        } catch {
            resultText = "inference failed: \(error.localizedDescription)"
        }
    }

    func nextImage() {
        guard let m = manifest, let transform else { return }
        let size = transform.crop
        defer { sampleIndex += 1 }
        if samples.isEmpty {
            input = (0..<(m.inChans * size * size)).map { _ in Float.random(in: -1...1) }
            inputLabel = "a random input (no samples bundled)"
            image = nil
            return
        }
        let url = samples[sampleIndex % samples.count]
        guard let decoded = Self.decodeRGBA(url) else {
            resultText = "cannot read \(url.lastPathComponent)"
            return
        }
        // The model's own transform (manifest `input`: resize, crop, interpolation, mean/std), the tested
        // HydraPolicy code, bit-identical to the Python toolkit on the same pixels.
        do {
            input = try transform.apply(rgba: decoded.rgba, width: decoded.width, height: decoded.height)
        } catch {
            resultText = "cannot preprocess \(url.lastPathComponent): \(error)"
            return
        }
        inputLabel = "\(url.lastPathComponent) (\(decoded.width)x\(decoded.height), \(transform.describe()))"
        image = UIImage(cgImage: decoded.image)
    }

    func runBenchmark() async {
        guard let manifest, let resources, !options.isEmpty, !isBenchmarking else { return }
        isBenchmarking = true
        defer { isBenchmarking = false }
        let defaults = UserDefaults.standard
        let runs = defaults.integer(forKey: Contract.argRuns) > 0 ? defaults.integer(forKey: Contract.argRuns) : 30
        let warmup = defaults.object(forKey: Contract.argWarmup) != nil ? defaults.integer(forKey: Contract.argWarmup) : 5
        do {
            let precisions = manifest.variants(Contract.coremlTarget).map { $0.precision }
            _ = try await BenchmarkRunner.run(precisions: precisions, open: { [unowned self] in try await self.engineFor($0) },
                                              manifest: manifest, manifestData: manifestData,
                                              resources: resources, runs: runs, warmup: warmup) { [weak self] text in
                self?.benchmarkStatus = text
            }
            if let report = BenchmarkRunner.lastReport(), let entry = Tables.entryFromReport(report, backend: Contract.backendCoreML),
               let table = lut {
                policy = try LutDevice(entry: entry, policy: table.policy).stateFor(options).state
                tableNote = "latencies: this device's benchmark"
            }
            benchmarkStatus += "\nshare it from the Files app (On My iPhone > HydraDemo) and run `hydravit-edge bench import FILE`"
        } catch {
            benchmarkStatus = "benchmark failed: \(error.localizedDescription)"
        }
    }

    /// The file's pixels as decoded, RGBA row-major with the colours not premultiplied (Pillow's
    /// convert("RGB") keeps the stored colours under any alpha and ignores colour profiles and EXIF
    /// orientation, so this reads the decoded samples as they are); the model's transform does the rest.
    static func decodeRGBA(_ url: URL) -> (rgba: [UInt8], width: Int, height: Int, image: CGImage)? {
        guard let source = CGImageSourceCreateWithURL(url as CFURL, nil),
              let cg = CGImageSourceCreateImageAtIndex(source, 0, nil) else { return nil }
        let w = cg.width
        let h = cg.height
        if let stored = storedRGBA(cg) { return (stored, w, h, cg) }
        // Other layouts (16-bit, palette, CMYK, premultiplied): draw into an 8-bit RGBA context. Core
        // Graphics premultiplies, so colours under partial alpha are only approximated after un-premultiplying.
        var bytes = [UInt8](repeating: 0, count: w * h * 4)
        let drawn = bytes.withUnsafeMutableBytes { buffer -> Bool in
            guard let context = CGContext(data: buffer.baseAddress, width: w, height: h, bitsPerComponent: 8,
                                          bytesPerRow: w * 4, space: CGColorSpaceCreateDeviceRGB(),
                                          bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue) else { return false }
            context.draw(cg, in: CGRect(x: 0, y: 0, width: w, height: h))
            return true
        }
        guard drawn else { return nil }
        for i in 0..<(w * h) {
            let a = Int(bytes[4 * i + 3])
            if a > 0 && a < 255 {
                for c in 0..<3 { bytes[4 * i + c] = UInt8(min(255, (Int(bytes[4 * i + c]) * 255 + a / 2) / a)) }
            }
        }
        return (bytes, w, h, cg)
    }

    /// 8-bit RGB, RGBA / ARGB (not premultiplied), grey or grey + alpha samples read as stored, nil for other layouts.
    static func storedRGBA(_ cg: CGImage) -> [UInt8]? {
        guard cg.bitsPerComponent == 8, let model = cg.colorSpace?.model,
              let data = cg.dataProvider?.data, let base = CFDataGetBytePtr(data) else { return nil }
        let w = cg.width
        let h = cg.height
        let stride = cg.bytesPerRow
        let bpp = cg.bitsPerPixel / 8
        let alpha = cg.alphaInfo
        let order = cg.bitmapInfo.intersection(.byteOrderMask)
        let little32 = order == .byteOrder32Little
        let little16 = order == .byteOrder16Little
        let order32 = order.isEmpty || order == .byteOrder32Big || little32
        // byte offsets of R, G, B (grey: the grey byte three times) and of alpha (-1: none) within a pixel
        let offsets: (r: Int, g: Int, b: Int, a: Int)
        switch (model, bpp) {
        case (.rgb, 3) where alpha == CGImageAlphaInfo.none && order.isEmpty:
            offsets = (0, 1, 2, -1)
        case (.rgb, 4) where (alpha == .last || alpha == .noneSkipLast) && order32:
            offsets = little32 ? (3, 2, 1, 0) : (0, 1, 2, 3)
        case (.rgb, 4) where (alpha == .first || alpha == .noneSkipFirst) && order32:
            offsets = little32 ? (2, 1, 0, 3) : (1, 2, 3, 0)
        case (.monochrome, 1) where alpha == CGImageAlphaInfo.none:
            offsets = (0, 0, 0, -1)
        case (.monochrome, 2) where alpha == .last || alpha == .noneSkipLast:
            offsets = little16 ? (1, 1, 1, 0) : (0, 0, 0, 1)
        default:
            return nil
        }
        let (r, g, b, a) = offsets
        guard w > 0, h > 0, CFDataGetLength(data) >= stride * (h - 1) + w * bpp else { return nil }
        let opaque = alpha == .noneSkipLast || alpha == .noneSkipFirst || a < 0
        var out = [UInt8](repeating: 0, count: w * h * 4)
        withExtendedLifetime(data) {  // `base` points into `data`
            for y in 0..<h {
                for x in 0..<w {
                    let p = y * stride + x * bpp
                    let o = 4 * (y * w + x)
                    out[o] = base[p + r]
                    out[o + 1] = base[p + g]
                    out[o + 2] = base[p + b]
                    out[o + 3] = opaque ? 255 : base[p + a]
                }
            }
        }
        return out
    }
}

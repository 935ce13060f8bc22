import Foundation
import HydraPolicy
import ImageIO
import SwiftUI
import UIKit

/// The demo's state: loads manifest.json, lut.json and the Core ML package from the bundle's
/// `hydravit` folder, then every second reads the power state, asks the policy for k (unless
/// pinned), runs the current sample and shows k, the reason, the latency and the top-5.
/// Launched with `-benchmark YES [-runs 30] [-warmup 5]` it runs the benchmark first.
@MainActor
final class DemoModel: ObservableObject {
    @Published var powerText = ""
    @Published var decisionText = "loading..."
    @Published var resultText = ""
    @Published var benchmarkStatus = ""
    @Published var ks: [Int] = []
    @Published var image: UIImage?
    @Published var isBenchmarking = false
    @Published var pinnedK: Int? = nil {
        didSet { if pinnedK == nil { policy?.reset() } }
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
            let e = try await CoreMLEngine.open(resources: dir, manifest: m, manifestData: data)
            let loadMs = try await e.prepare(e.ks.last!)
            resources = dir
            manifest = m
            transform = t
            manifestData = data
            engine = e
            ks = e.ks
            chooseTable()
            let sampleDir = dir.appendingPathComponent(Contract.samplesDir)
            samples = ((try? FileManager.default.contentsOfDirectory(at: sampleDir, includingPropertiesForKeys: nil)) ?? [])
                .filter { ["png", "jpg", "jpeg"].contains($0.pathExtension.lowercased()) }
                .sorted { $0.lastPathComponent < $1.lastPathComponent }
            nextImage()
            decisionText = "loaded \(e.mode) Core ML package (k \(e.ks.first!)...\(e.ks.last!)) in \(Int(loadMs)) ms; \(tableNote)"
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

    private func chooseTable() {
        guard let dir = resources else { return }
        guard let data = try? Data(contentsOf: dir.appendingPathComponent(Contract.lutFile)) else {
            tableNote = "no \(Contract.lutFile) bundled: auto uses the largest k"
            return
        }
        do {
            let table = try Lut(data: data)
            lut = table
            let choice = try Tables.choose(lut: table, deviceName: DeviceFacts.modelIdentifier, backend: Contract.backendCoreML,
                                           ownReport: BenchmarkRunner.lastReport())
            policy = try choice.device.state()
            tableNote = "latencies: \(choice.source)" + (choice.fallback ? " - run the benchmark on this device" : "")
        } catch {
            tableNote = "lut.json unusable: \(error)"
        }
    }

    func step() async {
        guard let engine, !busy, !isBenchmarking, !input.isEmpty else { return }
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
        let k = pinnedK ?? decision?.k ?? ks.last ?? 0
        let why = pinnedK != nil ? "pinned by hand" : decision.map { "limited by \($0.limit): \($0.reason)" } ?? tableNote
        do {
            let start = DispatchTime.now().uptimeNanoseconds
            let logits = try await engine.predict(input, k: k)
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            let labels = manifest?.labels ?? []
            let top = Imaging.topK(logits, 5).map { index, p in
                "  \(index < labels.count ? labels[index] : "class \(index)")  \(String(format: "%.1f", 100 * p))%"
            }.joined(separator: "\n")
            decisionText = "k = \(k) of \(ks.last ?? k)\n\(why)\n\(tableNote)"
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
        guard let engine, let manifest, let resources, !isBenchmarking else { return }
        isBenchmarking = true
        defer { isBenchmarking = false }
        let defaults = UserDefaults.standard
        let runs = defaults.integer(forKey: Contract.argRuns) > 0 ? defaults.integer(forKey: Contract.argRuns) : 30
        let warmup = defaults.object(forKey: Contract.argWarmup) != nil ? defaults.integer(forKey: Contract.argWarmup) : 5
        do {
            _ = try await BenchmarkRunner.run(engine: engine, manifest: manifest, manifestData: manifestData,
                                              resources: resources, runs: runs, warmup: warmup) { [weak self] text in
                self?.benchmarkStatus = text
            }
            if let report = BenchmarkRunner.lastReport(), let entry = Tables.entryFromReport(report, backend: Contract.backendCoreML),
               let table = lut {
                policy = try LutDevice(entry: entry, policy: table.policy).state()
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

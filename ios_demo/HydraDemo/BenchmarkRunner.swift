import CryptoKit
import Foundation
import HydraPolicy
import UIKit

enum DeviceFacts {
    /// Hardware model identifier, e.g. "iPhone16,1" (the simulator reports the simulated model).
    static var modelIdentifier: String {
        if let simulated = ProcessInfo.processInfo.environment["SIMULATOR_MODEL_IDENTIFIER"] { return simulated }
        var sys = utsname()
        uname(&sys)
        return withUnsafeBytes(of: &sys.machine) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    @MainActor
    static func info() -> DeviceInfo {
        let os = "\(UIDevice.current.systemName) \(UIDevice.current.systemVersion)"
        return DeviceInfo(name: modelIdentifier, model: modelIdentifier, os: os, cpu: modelIdentifier,
                          cpuCores: ProcessInfo.processInfo.activeProcessorCount,
                          memoryMb: Double(ProcessInfo.processInfo.physicalMemory) / 1e6,
                          runtimes: ["coreml": os])
    }

    /// The app's memory footprint now (task_vm_info.phys_footprint), MB.
    static func footprintMB() -> Double? {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size)
        let result = withUnsafeMutablePointer(to: &info) { pointer in
            pointer.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
            }
        }
        return result == KERN_SUCCESS ? Double(info.phys_footprint) / 1e6 : nil
    }
}

/// Benchmark mode: every k at every bundled precision (`precisions`, each engine from `open`), its function loaded afresh (load_ms, and the switch cost: Core ML
/// loads a function to change k), [warmup] untimed runs, [runs] timed batch-1 runs; the report
/// goes to Documents/hydravit-bench-report.json in the harness's schema.
enum BenchmarkRunner {
    static var reportURL: URL {
        FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0].appendingPathComponent(Contract.reportFile)
    }

    static func lastReport() -> [String: Any]? {
        guard let data = try? Data(contentsOf: reportURL) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    @MainActor
    static func run(precisions: [String], open: (String) async throws -> CoreMLEngine, manifest: ExportManifest,
                    manifestData: Data, resources: URL, runs: Int, warmup: Int,
                    progress: (String) -> Void) async throws -> URL {
        guard !precisions.isEmpty else { throw DemoError(message: "no precision to benchmark") }
        guard runs >= 1, warmup >= 0 else { throw DemoError(message: "runs must be >= 1 and warmup >= 0") }
        let sha = SHA256.hash(data: manifestData).map { String(format: "%02x", $0) }.joined()
        let version = Bundle.main.object(forInfoDictionaryKey: "CFBundleShortVersionString") as? String ?? "0"
        let builder = ReportBuilder(
            device: DeviceFacts.info(), manifestSha256: sha, toolName: Contract.toolName, toolVersion: version,
            settings: ["threads": NSNull(), "batch": 1, "runs": runs, "warmup": warmup,
                       "protocol": "iOS demo app, Core ML compute units all; peak_rss_mb is the largest phys_footprint seen so far"],
            model: ["heads": Array(Set(try manifest.options(Contract.coremlTarget).map { $0.k })).sorted(),
                    "img_size": manifest.imgSize, "num_classes": manifest.numClasses])
        let input = (0..<(manifest.inChans * manifest.imgSize * manifest.imgSize)).map { _ in Float.random(in: -1...1) }
        var peak = DeviceFacts.footprintMB() ?? 0
        for precision in precisions {
            let engine = try await open(precision)  // releases the previous precision's engine
            for (i, k) in engine.ks.enumerated() {
                progress("benchmark \(precision): k=\(k) (\(i + 1)/\(engine.ks.count))")
                await engine.unloadAll()
                let loadMs = try await engine.prepare(k)
                _ = try await engine.time(input, k: k, count: max(1, warmup))
                let samples = try await engine.time(input, k: k, count: runs)
                peak = max(peak, DeviceFacts.footprintMB() ?? 0)
                let rec = try await engine.record(k)
                let size = try? FileManager.default.allocatedSizeOfDirectory(at: resources.appendingPathComponent(rec.file))
                var notes: [String] = []
                if i == 0, engine.compileMs > 0 { notes.append("compiled the package on this launch in \(Int(engine.compileMs)) ms") }
                builder.add(ReportRow(k: k, backend: Contract.backendCoreML, artifact: rec.file, target: Contract.coremlTarget,
                                      mode: engine.mode, entry: rec.entry, compute: "all", precision: engine.precision,
                                      latency: LatencyStats(samplesMs: samples), loadMs: loadMs,
                                      switchMs: engine.mode == "single" ? loadMs : nil, peakRssMb: peak > 0 ? peak : nil,
                                      fileBytes: size, notes: notes))
            }
        }
        let url = try builder.write(to: reportURL)
        progress("benchmark report: Documents/\(Contract.reportFile)")
        return url
    }
}

extension FileManager {
    /// Bytes of a file, or of every file below a directory (an .mlpackage).
    func allocatedSizeOfDirectory(at url: URL) throws -> Int {
        var isDirectory: ObjCBool = false
        guard fileExists(atPath: url.path, isDirectory: &isDirectory) else { throw DemoError(message: "\(url.path) missing") }
        if !isDirectory.boolValue {
            return (try attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.intValue ?? 0
        }
        var total = 0
        if let walker = enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey, .isRegularFileKey]) {
            for case let file as URL in walker {
                let values = try file.resourceValues(forKeys: [.fileSizeKey, .isRegularFileKey])
                if values.isRegularFile == true { total += values.fileSize ?? 0 }
            }
        }
        return total
    }
}

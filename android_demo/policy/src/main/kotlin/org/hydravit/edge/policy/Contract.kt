package org.hydravit.edge.policy

/**
 * Names shared with the rest of hydravit-edge.  tests/test_app_contract.py reads these
 * `const val`s and checks them against the exporter (artifact files, ONNX input names,
 * ExecuTorch method names), the manifest/LUT/report schemas and `hydravit-edge bench android`.
 */
object Contract {
    /** Folder under the app's assets holding manifest.json, lut.json and the artifacts (as the export wrote them). */
    const val ASSET_DIR = "hydravit"
    const val MANIFEST_FILE = "manifest.json"
    const val LUT_FILE = "lut.json"
    /** Optional sample images (PNG/JPEG) shown by the demo, under ASSET_DIR. */
    const val SAMPLES_DIR = "samples"

    /** Export targets (manifest `targets` keys) and their single artifacts. */
    const val ONNX_TARGET = "onnx"
    const val ONNX_SINGLE_FILE = "onnx/hydravit.onnx"
    const val ONNX_IMAGE_INPUT = "image"
    const val ONNX_HEADS_INPUT = "heads"
    const val ONNX_LOGITS_OUTPUT = "logits"
    const val EXECUTORCH_TARGET = "executorch"
    const val EXECUTORCH_SINGLE_FILE = "executorch/hydravit.pte"
    /** ExecuTorch method of k in the single .pte: forward_k3, forward_k4, ... */
    const val EXECUTORCH_METHOD_PREFIX = "forward_k"
    /** Method of a per-k .pte. */
    const val EXECUTORCH_PER_K_METHOD = "forward"

    /** Report rows' backend names (bench/schemas/report.schema.json). */
    const val BACKEND_ONNXRUNTIME = "onnxruntime"
    const val BACKEND_EXECUTORCH = "executorch"

    /** Benchmark mode: `adb shell am start -n PACKAGE/.MainActivity --ez benchmark true --ei runs N`. */
    const val APPLICATION_ID = "org.hydravit.edge.demo"
    const val MAIN_ACTIVITY = ".MainActivity"
    const val EXTRA_BENCHMARK = "benchmark"
    const val EXTRA_RUNS = "runs"
    const val EXTRA_WARMUP = "warmup"
    const val EXTRA_BACKEND = "backend"
    /** Written (temporary file + rename) to the app's external files dir, pulled by `hydravit-edge bench android`. */
    const val REPORT_FILE = "hydravit-bench-report.json"
    const val TOOL_NAME = "hydravit-edge-android"

    fun executorchMethod(k: Int): String = "$EXECUTORCH_METHOD_PREFIX$k"
}

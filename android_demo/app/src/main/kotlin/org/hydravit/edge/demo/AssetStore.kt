package org.hydravit.edge.demo

import android.content.Context
import org.hydravit.edge.policy.Contract
import java.io.File
import java.io.FileNotFoundException

/** Files under assets/hydravit/ (manifest.json, lut.json, artifacts, samples). */
class AssetStore(private val context: Context) {
    private fun assetPath(path: String) = "${Contract.ASSET_DIR}/$path"

    fun exists(path: String): Boolean = try {
        context.assets.open(assetPath(path)).close()
        true
    } catch (_: FileNotFoundException) {
        false
    }

    fun text(path: String): String = context.assets.open(assetPath(path)).bufferedReader().use { it.readText() }

    fun bytes(path: String): ByteArray = context.assets.open(assetPath(path)).use { it.readBytes() }

    fun size(path: String): Long? = try {
        context.assets.openFd(assetPath(path)).use { it.length }
    } catch (_: Exception) {
        null  // compressed asset: size unknown without reading it
    }

    fun list(dir: String): List<String> = context.assets.list(assetPath(dir))?.sorted()?.map { "$dir/$it" } ?: emptyList()

    /** A real file for runtimes that need a path (ExecuTorch): copied once into the app's files dir. */
    fun file(path: String): File {
        val out = File(context.filesDir, assetPath(path))
        val expected = size(path)
        if (!out.isFile || (expected != null && out.length() != expected)) {
            out.parentFile?.mkdirs()
            val tmp = File(out.parentFile, ".${out.name}.tmp")
            context.assets.open(assetPath(path)).use { input -> tmp.outputStream().use { input.copyTo(it) } }
            check(tmp.renameTo(out)) { "cannot write $out" }
        }
        return out
    }
}

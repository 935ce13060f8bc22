import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "org.hydravit.edge.demo"
    compileSdk = 35

    defaultConfig {
        // `hydravit-edge bench android` starts org.hydravit.edge.demo/.MainActivity (see policy/.../Contract.kt).
        applicationId = "org.hydravit.edge.demo"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        buildConfigField("String", "ONNXRUNTIME_VERSION", "\"${libs.versions.onnxruntime.get()}\"")
        buildConfigField("String", "EXECUTORCH_VERSION", "\"${libs.versions.executorch.get()}\"")
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            signingConfig = signingConfigs.getByName("debug")  // a demo: installable release builds
        }
    }
    buildFeatures { buildConfig = true }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    // Models are read whole (ONNX Runtime) or copied to a file (ExecuTorch): keep them uncompressed.
    androidResources { noCompress.addAll(listOf("onnx", "pte", "json")) }
    // ONNX Runtime and ExecuTorch both ship the NDK's C++ runtime.
    packaging { jniLibs { pickFirsts += "**/libc++_shared.so" } }
    sourceSets["main"].assets.srcDir(layout.buildDirectory.dir("generated/hydravit-assets"))
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    implementation(project(":policy"))
    implementation(libs.onnxruntime.android)
    implementation(libs.executorch.android)
}

// Copy the export (manifest.json + ONNX/ExecuTorch artifacts) and lut.json into the assets when
// -Phydravit.export=DIR / -Phydravit.lut=FILE are given (paths relative to android_demo/).
val hydravitExport = providers.gradleProperty("hydravit.export").orNull?.takeIf { it.isNotBlank() }
val hydravitLut = providers.gradleProperty("hydravit.lut").orNull?.takeIf { it.isNotBlank() }

val syncHydravitAssets by tasks.registering(Sync::class) {
    description = "Copies the hydravit-edge export and lut.json into the app's assets (hydravit/)."
    into(layout.buildDirectory.dir("generated/hydravit-assets/hydravit"))
    hydravitExport?.let { dir ->
        val export = rootProject.file(dir)
        doFirst {
            check(export.resolve("manifest.json").isFile) { "$export has no manifest.json: pass the folder `hydravit-edge export` wrote" }
        }
        from(export) {
            // every precision's folder: onnx (fp32), onnx-int8, onnx-fp16, executorch-int8, ...
            include("manifest.json", "onnx/**", "onnx-*/**", "executorch/**", "executorch-*/**", "samples/**")
        }
    }
    hydravitLut?.let { file ->
        val lut = rootProject.file(file)
        doFirst { check(lut.isFile) { "$lut does not exist: build it with `hydravit-edge lut build reports/*.json --out lut.json`" } }
        from(lut) { rename { "lut.json" } }
    }
}
tasks.named("preBuild") { dependsOn(syncHydravitAssets) }

// hydravit-edge Android demo: the `app` (ONNX Runtime / ExecuTorch, battery-aware k) and the
// pure-Kotlin `policy` library (policy, LUT, manifest and report logic; JUnit 5 over ../tests/policy_vectors.json).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "hydravit-edge-demo"
include(":app", ":policy")

import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// Pure Kotlin/JVM: no Android dependency, so its tests run on any JVM (also without Gradle: mk/kotlin.mk).
plugins {
    alias(libs.plugins.kotlin.jvm)
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    // Android provides org.json at run time; the JVM build and tests use the same implementation.
    compileOnly(libs.android.json)
    testImplementation(libs.android.json)
    testImplementation(platform(libs.junit.bom))
    testImplementation(libs.junit.jupiter)
    testRuntimeOnly(libs.junit.platform.launcher)
}

val policyVectors = rootProject.file("../tests/policy_vectors.json")

tasks.test {
    useJUnitPlatform()
    inputs.file(policyVectors)
    systemProperty("hydravit.policyVectors", policyVectors.absolutePath)
    testLogging { events("passed", "failed", "skipped") }
}

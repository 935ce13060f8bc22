# Kotlin policy module of the Android demo: compile with kotlinc and run its JUnit 5 tests here,
# without Gradle or the Android SDK.  `include mk/kotlin.mk` from the Makefile, or run it alone:
#
#     make -f mk/kotlin.mk kotlin-test
#
# Installs what is missing:
#   * kotlinc:     npm package kotlin-compiler@$(KOTLIN_VERSION), into $(KOTLIN_BUILD)/npm (git-ignored)
#   * JUnit 5:     Debian package junit5 (console launcher), via apt-get
#   * org.json:    Debian package libandroid-json-java (Android's org.json), via apt-get
#   * java / npm:  default-jre-headless / npm, via apt-get, only when absent
# Compiles android_demo/policy/src/{main,test}/kotlin into $(KOTLIN_BUILD)/classes (skipped when
# the sources and compiler are unchanged), then runs every test against tests/policy_vectors.json
# and tests/transform_vectors.json (the evaluation transform, Preprocess.kt).
# The report-writer test writes a sample report to $(KOTLIN_REPORT_OUT) (validated by
# tests/test_kotlin_policy.py against bench/schemas/report.schema.json).

KOTLIN_ROOT       := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
KOTLIN_VERSION    ?= 2.4.20
KOTLIN_BUILD      ?= $(KOTLIN_ROOT)/.kotlin-build
KOTLIN_CLASSES    ?= $(KOTLIN_BUILD)/classes
KOTLIN_REPORT_OUT ?= $(KOTLIN_BUILD)/kotlin-report.json
KOTLIN_VECTORS    ?= $(KOTLIN_ROOT)/tests/policy_vectors.json
KOTLIN_TRANSFORM_VECTORS ?= $(KOTLIN_ROOT)/tests/transform_vectors.json
# Optional: a real export's manifest.json for the manifest-reader test (tests/test_app_contract.py sets it).
KOTLIN_MANIFEST   ?=
KOTLIN_POLICY     := $(KOTLIN_ROOT)/android_demo/policy
KOTLIN_NPM        := $(KOTLIN_BUILD)/npm
KOTLIN_HOME       ?= $(KOTLIN_NPM)/node_modules/kotlin-compiler
KOTLINC           ?= $(KOTLIN_HOME)/bin/kotlinc
KOTLIN_STDLIB     ?= $(KOTLIN_HOME)/lib/kotlin-stdlib.jar
JAVA_SHARE        ?= /usr/share/java
ANDROID_JSON_JAR  ?= $(JAVA_SHARE)/com.android.json.jar
JUNIT_CONSOLE_JAR ?= $(JAVA_SHARE)/junit-platform-console-standalone.jar
JUNIT_API_CP      ?= $(JAVA_SHARE)/junit-jupiter-api.jar:$(JAVA_SHARE)/opentest4j.jar:$(JAVA_SHARE)/junit-platform-commons.jar:$(JAVA_SHARE)/apiguardian-api.jar
# A short-lived compiler JVM starts faster with the C1 JIT only.
KOTLIN_JAVA_OPTS  ?= -XX:TieredStopAtLevel=1 -XX:+UseParallelGC
KOTLIN_SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: kotlin-test kotlin-deps kotlin-compile kotlin-clean

kotlin-deps:
	@set -e; mkdir -p "$(KOTLIN_BUILD)"; exec 8>"$(KOTLIN_BUILD)/.deps.lock"; flock 8; \
	apt_install() { \
	  echo "kotlin.mk: installing $$* with apt-get"; \
	  command -v apt-get >/dev/null || { echo "kotlin.mk: apt-get not found; install $$* by hand" >&2; exit 1; }; \
	  DEBIAN_FRONTEND=noninteractive $(KOTLIN_SUDO) apt-get install -y -q --no-install-recommends "$$@" >/dev/null 2>&1 \
	  || { $(KOTLIN_SUDO) apt-get update -q >/dev/null && \
	       DEBIAN_FRONTEND=noninteractive $(KOTLIN_SUDO) apt-get install -y -q --no-install-recommends "$$@"; }; \
	}; \
	command -v java >/dev/null || apt_install default-jre-headless; \
	if [ ! -f "$(JUNIT_CONSOLE_JAR)" ] || [ ! -f "$(ANDROID_JSON_JAR)" ]; then apt_install junit5 libandroid-json-java; fi; \
	if [ ! -x "$(KOTLINC)" ] || [ "$$(cat "$(KOTLIN_HOME)/build.txt" 2>/dev/null)" != "$(KOTLIN_VERSION)" ]; then \
	  command -v npm >/dev/null || apt_install npm; \
	  echo "kotlin.mk: installing kotlin-compiler@$(KOTLIN_VERSION) into $(KOTLIN_NPM)"; \
	  mkdir -p "$(KOTLIN_NPM)"; \
	  npm install --prefix "$(KOTLIN_NPM)" --no-audit --no-fund --loglevel=error "kotlin-compiler@$(KOTLIN_VERSION)" >/dev/null; \
	  chmod +x "$(KOTLIN_HOME)"/bin/*; \
	fi

# Recompiles only when a source file or the compiler changed (hash of both, so deleted files count too);
# `flock` serialises concurrent runs (pytest -n 2) on the same classes folder.
kotlin-compile: kotlin-deps
	@set -e; mkdir -p "$(KOTLIN_BUILD)"; exec 9>"$(KOTLIN_BUILD)/.compile.lock"; flock 9; \
	hash=$$( (cd "$(KOTLIN_POLICY)" && find src -name '*.kt' | LC_ALL=C sort | xargs sha256sum; \
	          echo "$(KOTLIN_VERSION) $(KOTLINC)") | sha256sum | cut -d' ' -f1); \
	if [ -f "$(KOTLIN_CLASSES)/.sources.sha256" ] && [ "$$(cat "$(KOTLIN_CLASSES)/.sources.sha256")" = "$$hash" ]; then \
	  echo "kotlin.mk: policy module up to date in $(KOTLIN_CLASSES)"; \
	else \
	  rm -rf "$(KOTLIN_CLASSES)"; mkdir -p "$(KOTLIN_CLASSES)"; \
	  echo "kotlin.mk: kotlinc $(KOTLIN_VERSION): android_demo/policy (main + test) -> $(KOTLIN_CLASSES)"; \
	  JAVA_OPTS="$(KOTLIN_JAVA_OPTS)" "$(KOTLINC)" -jvm-target 17 -nowarn \
	    -cp "$(ANDROID_JSON_JAR):$(JUNIT_API_CP)" \
	    "$(KOTLIN_POLICY)/src/main/kotlin" "$(KOTLIN_POLICY)/src/test/kotlin" -d "$(KOTLIN_CLASSES)"; \
	  echo "$$hash" > "$(KOTLIN_CLASSES)/.sources.sha256"; \
	fi

kotlin-test: kotlin-compile
	java -XX:TieredStopAtLevel=1 \
	  -Dhydravit.policyVectors="$(KOTLIN_VECTORS)" -Dhydravit.transformVectors="$(KOTLIN_TRANSFORM_VECTORS)" \
	  -Dhydravit.reportOut="$(KOTLIN_REPORT_OUT)" \
	  $(if $(KOTLIN_MANIFEST),-Dhydravit.manifest="$(KOTLIN_MANIFEST)") \
	  -jar "$(JUNIT_CONSOLE_JAR)" --disable-banner --disable-ansi-colors --details=tree --fail-if-no-tests \
	  -cp "$(KOTLIN_CLASSES):$(KOTLIN_STDLIB):$(ANDROID_JSON_JAR)" \
	  --select-package org.hydravit.edge.policy

kotlin-clean:
	rm -rf "$(KOTLIN_CLASSES)" "$(KOTLIN_BUILD)/kotlin-report.json"

import HydraPolicy
import SwiftUI

/// Power state, the chosen (k, precision) and why, a sample image with its top-5, the manual override and
/// the benchmark button. All state lives in DemoModel.
struct ContentView: View {
    @StateObject private var model = DemoModel()

    var body: some View {
        NavigationStack {
            ScrollView {
                VStack(alignment: .leading, spacing: 12) {
                    Text(model.powerText).font(.footnote)
                    Picker("k", selection: $model.pinned) {
                        Text("auto (policy)").tag(OptionRef?.none)
                        ForEach(model.options, id: \.self) { option in
                            Text("pin k = \(option.k) \(option.precision ?? "fp32")").tag(OptionRef?.some(option))
                        }
                    }
                    .pickerStyle(.menu)
                    Text(model.decisionText).font(.headline)
                    if let image = model.image {
                        Image(uiImage: image)
                            .resizable()
                            .interpolation(.none)
                            .scaledToFit()
                            .frame(maxHeight: 200)
                    }
                    HStack {
                        Button("Next image") { model.nextImage() }
                        Spacer()
                        Button("Run benchmark") { Task { await model.runBenchmark() } }
                            .disabled(model.isBenchmarking || model.ks.isEmpty)
                    }
                    Text(model.resultText).font(.system(.body, design: .monospaced))
                    Text(model.benchmarkStatus).font(.footnote)
                }
                .padding()
            }
            .navigationTitle("HydraViT edge")
        }
        .task { await model.start() }
    }
}

import SwiftUI

@main
struct HydraDemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}

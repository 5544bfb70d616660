import ArgumentParser

/// Subcommands of the command line that later issues build. Each says so and exits non-zero.
protocol NotYetBuilt: AsyncParsableCommand {
    static var plannedIn: String { get }
}

extension NotYetBuilt {
    func run() async throws {
        throw CommandFailure(description: "fleetsync \(Self.configuration.commandName ?? ""): not built yet (\(Self.plannedIn))")
    }
}







struct SnapshotCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Export or import an air-gapped bootstrap snapshot.",
        subcommands: [Export.self, Import.self])

    struct Export: NotYetBuilt {
        static let configuration = CommandConfiguration(commandName: "export", abstract: "(shore) Write a vessel's partition to one file.")
        static let plannedIn = "comes with the snapshot issue"
        @OptionGroup var options: ConfigOption
        @Option var vessel: String
        @Option var output: String
    }

    struct Import: NotYetBuilt {
        static let configuration = CommandConfiguration(commandName: "import", abstract: "(vessel) Load a snapshot file.")
        static let plannedIn = "comes with the snapshot issue"
        @OptionGroup var options: ConfigOption
        @Argument var file: String
    }
}


struct DemoCommand: NotYetBuilt {
    static let configuration = CommandConfiguration(commandName: "demo", abstract: "Run a narrated local demo fleet.")
    static let plannedIn = "comes with the operations and demo issue"
}

import ArgumentParser

struct DLQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "List, retry or discard events that failed to apply.",
        subcommands: [List.self, Retry.self, Discard.self])

    struct List: NotYetBuilt {
        static let configuration = CommandConfiguration(commandName: "list")
        static let plannedIn = "comes with the merge and apply issue"
        @OptionGroup var options: ConfigOption
    }
    struct Retry: NotYetBuilt {
        static let configuration = CommandConfiguration(commandName: "retry")
        static let plannedIn = "comes with the merge and apply issue"
        @OptionGroup var options: ConfigOption
    }
    struct Discard: NotYetBuilt {
        static let configuration = CommandConfiguration(commandName: "discard")
        static let plannedIn = "comes with the merge and apply issue"
        @OptionGroup var options: ConfigOption
    }
}

struct QuarantineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quarantine", abstract: "List or drain values held for columns this node lacks.",
        subcommands: [List.self, Drain.self])

    struct List: NotYetBuilt {
        static let configuration = CommandConfiguration(commandName: "list")
        static let plannedIn = "comes with the merge and apply issue"
        @OptionGroup var options: ConfigOption
    }
    struct Drain: NotYetBuilt {
        static let configuration = CommandConfiguration(commandName: "drain")
        static let plannedIn = "comes with the merge and apply issue"
        @OptionGroup var options: ConfigOption
    }
}

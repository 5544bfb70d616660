import ArgumentParser
import FleetSyncCore
import FleetSyncPostgres
import Foundation

/// Opens the database, reads the local schema, and hands an applier to `body`.
func withApplier<T: Sendable>(_ configuration: FleetSyncConfiguration, _ body: @Sendable (Applier) async throws -> T) async throws -> T {
    try await withDatabase(configuration) { db in
        let schema = try await LocalSchema.load(configuration: configuration, session: db)
        let telemetry = TelemetryWriter(url: configuration.databaseURL, logger: makeLogger("fleetsync.telemetry"))
        do {
            let value = try await body(Applier(schema: schema, session: db, telemetry: telemetry))
            await telemetry.close()
            return value
        } catch {
            await telemetry.close()
            throw error
        }
    }
}

struct DLQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq", abstract: "List, retry or discard events that failed to apply.",
        subcommands: [List.self, Retry.self, Discard.self])

    struct Selection: ParsableArguments {
        @Option(name: .long, parsing: .upToNextOption, help: "Dead-letter ids to act on.")
        var id: [Int64] = []
        @Flag(help: "Act on every dead letter.")
        var all = false

        func ids() throws -> [Int64]? {
            guard all != !id.isEmpty else { throw ValidationError("name dead letters with --id N [N ...] or choose --all") }
            return all ? nil : id
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Show the dead-letter queue.")
        @OptionGroup var options: ConfigOption
        @Flag(help: "Print JSON lines.") var json = false

        func run() async throws {
            let configuration = try options.load()
            let entries = try await withDatabase(configuration) { try await DeadLetterQueue.list(on: $0) }
            if entries.isEmpty && !json { print("the dead-letter queue is empty") }
            for e in entries {
                if json {
                    print(JSONValue.object([
                        "id": .number(String(e.id)), "table": .string(e.table), "row_id": e.rowID.map { .string($0.uuidString.lowercased()) } ?? .null,
                        "sql_state": e.sqlState.map(JSONValue.string) ?? .null, "constraint": e.constraint.map(JSONValue.string) ?? .null,
                        "message": .string(e.message), "attempts": .number(String(e.attempts)), "event": (try? JSONParser.parse(e.event)) ?? .null,
                    ]).serialized)
                } else {
                    let constraint = e.constraint.map { " constraint \($0)" } ?? ""
                    print("#\(e.id) \(e.table) \(e.rowID?.uuidString.lowercased() ?? "-") [\(e.sqlState ?? "?")\(constraint)] attempts \(e.attempts): \(e.message)")
                }
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "retry", abstract: "Apply dead letters again through the normal merge.")
        @OptionGroup var options: ConfigOption
        @OptionGroup var selection: Selection

        func run() async throws {
            let configuration = try options.load()
            let ids = try selection.ids()
            let result = try await withApplier(configuration) { try await DeadLetterQueue.retry(ids: ids, applier: $0) }
            print("retried: \(result.applied) applied, \(result.failed) failed again (still queued)")
            if result.failed > 0 { throw ExitCode(1) }
        }
    }

    struct Discard: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "discard", abstract: "Delete dead letters for good.")
        @OptionGroup var options: ConfigOption
        @OptionGroup var selection: Selection

        func run() async throws {
            let configuration = try options.load()
            let ids = try selection.ids()
            let count = try await withDatabase(configuration) { try await DeadLetterQueue.discard(ids: ids, on: $0) }
            print("discarded \(count) dead letter(s)")
        }
    }
}

struct QuarantineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quarantine", abstract: "List or drain values held for columns or tables this node lacks.",
        subcommands: [List.self, Drain.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Show quarantined values and why.")
        @OptionGroup var options: ConfigOption

        func run() async throws {
            let configuration = try options.load()
            let entries = try await withDatabase(configuration) { try await QuarantineVault.list(on: $0) }
            if entries.isEmpty { print("the quarantine is empty") }
            for e in entries { print("\(e.table) \(e.rowID.uuidString.lowercased()) \(e.fields) reasons \(e.reasons)") }
        }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "drain", abstract: "Apply quarantined values whose columns now exist.")
        @OptionGroup var options: ConfigOption

        func run() async throws {
            let configuration = try options.load()
            let result = try await withApplier(configuration) { try await QuarantineVault.drain(applier: $0) }
            print("drained \(result.drained) value(s); \(result.remaining) remain quarantined")
        }
    }
}

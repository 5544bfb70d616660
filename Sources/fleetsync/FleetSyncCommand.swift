import ArgumentParser
import FleetSyncCore
import FleetSyncPostgres
import Foundation
import Logging

@main
struct FleetSyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleetsync",
        abstract: "Bidirectional sync of PostgreSQL tables between the shore and a fleet of vessels.",
        subcommands: [
            InitCommand.self, UninstallCommand.self, KeygenCommand.self, EnrollCommand.self, ServeCommand.self,
            RunCommand.self, SyncCommand.self, StatusCommand.self, SnapshotCommand.self, DLQCommand.self,
            QuarantineCommand.self, VerifyCommand.self, DemoCommand.self,
        ])
}

/// `--config FILE`, read and validated.
struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "The node's TOML configuration file.")
    var config: String

    func load() throws -> FleetSyncConfiguration {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: config) else {
            throw ValidationError("cannot read configuration file \(config): no such file")
        }
        let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        guard size <= ConfigurationLoader.maximumBytes else {
            throw ValidationError("configuration file \(config) is \(size) bytes; the limit is \(ConfigurationLoader.maximumBytes)")
        }
        guard let data = FileManager.default.contents(atPath: config), let text = String(data: data, encoding: .utf8) else {
            throw ValidationError("cannot read configuration file \(config) as UTF-8 text")
        }
        return try ConfigurationLoader.load(text: text, source: config)
    }
}

/// A failure reported to the operator as one clear message and a non-zero exit.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
}

/// A logger whose level is `FLEETSYNC_LOG_LEVEL` when set, else `defaultLevel`.
func makeLogger(_ label: String, defaultLevel: Logger.Level = .warning) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["FLEETSYNC_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? defaultLevel
    return logger
}

/// Opens the node's database, runs `body`, and closes the connection whatever happens.
func withDatabase<T: Sendable>(_ configuration: FleetSyncConfiguration, _ body: (DatabaseSession) async throws -> T) async throws -> T {
    let session = try await DatabaseSession.connect(url: configuration.databaseURL, logger: makeLogger("fleetsync.db"))
    do {
        let value = try await body(session)
        await session.close()
        return value
    } catch {
        await session.close()
        throw error
    }
}

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
            InitCommand.self, UninstallCommand.self, KeygenCommand.self, EnrollCommand.self, RevokeCommand.self, ServeCommand.self,
            RunCommand.self, SyncCommand.self, StatusCommand.self, SnapshotCommand.self, DLQCommand.self,
            QuarantineCommand.self, VerifyCommand.self, DemoCommand.self, RotateKeysCommand.self,
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

/// Opens the node's database; a failure names `database.url`, what went wrong and the fix.
func openDatabase(_ configuration: FleetSyncConfiguration) async throws -> DatabaseSession {
    do {
        return try await DatabaseSession.connect(url: configuration.databaseURL, logger: makeLogger("fleetsync.db"))
    } catch {
        throw DatabaseUnreachable(url: configuration.databaseURL, error: error)
    }
}

/// The node's database could not be opened: which setting, what the server or the network said,
/// and what to do about it.
struct DatabaseUnreachable: Error, CustomStringConvertible {
    var description: String

    init(url: String, error: DatabaseError) {
        guard let endpoint = try? PostgresEndpoint(url: url) else {
            description = "database.url: \(error.message). Fix: \(error.hint ?? "write postgres://USER:PASSWORD@HOST:PORT/DATABASE")"
            return
        }
        let place = "\(endpoint.host):\(endpoint.port)"
        let said = error.message
        let problem: String, fix: String
        switch error.sqlState {
        case "3D000":
            problem = "database \"\(endpoint.database)\" does not exist on \(place)"
            fix = "create it (createdb -h \(endpoint.host) -p \(endpoint.port) -U \(endpoint.user) \(endpoint.database)), or name an existing database at the end of database.url"
        case "28P01", "28000":
            problem = "the server at \(place) refused user \"\(endpoint.user)\": \(said)"
            fix = "correct the user or password in database.url, or let that user connect to \(endpoint.database) (pg_hba.conf, CREATE ROLE)"
        case "57P03":
            problem = "the server at \(place) is starting up or shutting down: \(said)"
            fix = "wait until PostgreSQL accepts connections, then run the command again"
        case let state?:
            problem = "the server at \(place) refused the connection: \(said) [SQLSTATE \(state)]"
            fix = "check database.url and the server's log"
        case nil:
            let lower = said.lowercased()
            if lower.contains("refused") {
                problem = "nothing accepts connections at \(place) (connection refused)"
                fix = "start PostgreSQL there, or correct the host and port in database.url"
            } else if lower.contains("timeout") || lower.contains("timed out") {
                problem = "no answer from \(place) in time"
                fix = "check that the host is reachable (network, firewall), or correct database.url"
            } else if lower.contains("name") && (lower.contains("resolv") || lower.contains("known") || lower.contains("lookup")) || lower.contains("no address") {
                problem = "host \"\(endpoint.host)\" cannot be found"
                fix = "correct the host in database.url"
            } else {
                problem = "cannot connect to \(place): \(said)"
                fix = "check that PostgreSQL runs there and that database.url is right"
            }
        }
        description = "database.url (\(Self.redacted(url))): \(problem). Fix: \(fix)"
    }

    /// The URL without its password.
    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? url
    }
}

/// Opens the node's database, runs `body`, and closes the connection whatever happens.
func withDatabase<T: Sendable>(_ configuration: FleetSyncConfiguration, _ body: (DatabaseSession) async throws -> T) async throws -> T {
    let session = try await openDatabase(configuration)
    do {
        let value = try await body(session)
        await session.close()
        return value
    } catch {
        await session.close()
        throw error
    }
}

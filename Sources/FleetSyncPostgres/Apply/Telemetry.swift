import FleetSyncCore
import PostgresNIO

/// Writes structured telemetry rows through a connection of its own, so that a record of a
/// failure survives the rollback of the transaction that failed.
public actor TelemetryWriter {
    private let url: String
    private let logger: Logger
    private var session: DatabaseSession?

    public init(url: String, logger: Logger) {
        self.url = url
        self.logger = logger
    }

    /// Records one telemetry row of `kind` with a JSON `detail`.
    public func record(kind: String, detail: JSONValue) async {
        do {
            if session == nil { session = try await DatabaseSession.connect(url: url, logger: logger) }
            var binds = PostgresBindings()
            binds.append(kind)
            binds.append(detail.serialized)
            try await session!.execute("INSERT INTO fleetsync.telemetry (kind, detail) VALUES ($1, $2::jsonb)", binds, context: "writing telemetry")
        } catch {
            // Telemetry must never stop the data path; the log keeps the record instead.
            logger.error("telemetry write failed", metadata: ["kind": "\(kind)", "error": "\(error)"])
            await session?.close()
            session = nil
        }
    }

    public func close() async {
        await session?.close()
        session = nil
    }
}

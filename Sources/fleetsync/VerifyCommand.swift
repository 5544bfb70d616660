import ArgumentParser
import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTransport
import FleetSyncVessel

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify", abstract: "(vessel) Prove this vessel holds the shore's partition.",
        discussion: """
            Compares this vessel's partition with the shore's by digests over key ranges, descending \
            only into ranges that differ, and prints the differing rows by table and key, with the \
            bytes and round trips used. With --repair, differing rows are fetched from the shore with \
            their field clocks and merged through the normal apply path (on tied clocks the field's \
            owner wins); each repair is logged in fleetsync.verify_log. Exit status: 0 the same (or \
            repaired); 5 differences remain.
            """)
    @OptionGroup var options: ConfigOption
    @Flag(help: "Repair the differing rows.") var repair = false
    @Flag(help: "Print JSON for scripts.") var json = false

    static let differencesRemain: Int32 = 5

    func run() async throws {
        let configuration = try options.load()
        try requireRole(configuration, .vessel, "verify")
        guard let vessel = configuration.vessel else { throw CommandFailure(description: "verify needs a [vessel] section") }
        let transport = try HTTPVerifyTransport(shoreURL: vessel.shoreURL, timeoutSeconds: vessel.requestTimeoutSeconds, trustedCertificates: vessel.tlsCA)
        let logger = makeLogger("fleetsync.verify")
        let outcome: VerifyOutcome
        do {
            outcome = try await withDatabase(configuration) { db in
                let schema = try await LocalSchema.load(configuration: configuration, session: db)
                let telemetry = TelemetryWriter(url: configuration.databaseURL, logger: logger)
                defer { Task { await telemetry.close() } }
                return try await Verifier(configuration: configuration, schema: schema, session: db, telemetry: telemetry, transport: transport, logger: logger)
                    .run(repair: repair)
            }
        } catch {
            await transport.shutdown()
            throw CommandFailure(description: "verify failed: \(error)")
        }
        await transport.shutdown()
        if json {
            print(outcome.json.serialized)
        } else {
            for difference in outcome.differences { print("\(difference.table) \(difference.id.lowercasedText): \(difference.kind.rawValue)") }
            for skipped in outcome.skipped { print("left alone (a change not yet sent; sync first): \(skipped.table) \(skipped.id.lowercasedText)") }
            let what = outcome.differences.isEmpty ? "same as the shore" : "\(outcome.differences.count) differing row(s)" + (repair ? ", \(outcome.repaired) repaired" : "")
            print("verify: \(what); \(outcome.bytesSent + outcome.bytesReceived) bytes (\(outcome.bytesSent) up, \(outcome.bytesReceived) down), \(outcome.roundTrips) round trip(s)")
        }
        if !outcome.differences.isEmpty && (!repair || !outcome.skipped.isEmpty) { throw ExitCode(Self.differencesRemain) }
    }
}

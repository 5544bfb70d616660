import ArgumentParser
import FleetSyncCore
import FleetSyncCrypto
import FleetSyncPostgres
import FleetSyncShore
import Foundation

struct KeygenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Create this node's ML-DSA-65 identity key and X-Wing (ML-KEM-768 + X25519) sealing key.",
        discussion: """
            Writes identity.key and sealing.key (mode 0600) and identity.pub (the public identity: node id, \
            public keys, self-signature) into [keys] directory. On a vessel, give identity.pub to the shore \
            (fleetsync enroll --vessel ID --identity FILE); on the shore, copy its identity.pub to every \
            vessel and name it in [vessel] shore_identity. Existing keys are never replaced.
            """)
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let configuration = try options.load()
        guard let directory = configuration.keysDirectory else {
            throw ValidationError("keygen needs [keys] directory in \(options.config): the directory that holds this node's private keys (created with mode 0700)")
        }
        let keys = try NodeKeys.generate()
        do {
            try keys.write(to: directory, node: configuration.nodeID, role: configuration.role.rawValue)
        } catch {
            throw CommandFailure(description: "\(error)")
        }
        let identity = try keys.publicIdentity(node: configuration.nodeID, role: configuration.role.rawValue)
        print("keys of \(configuration.role.rawValue) \(configuration.nodeID) written to \(directory) (identity.key, sealing.key: mode 0600)")
        print("public identity: \(NodeKeys.path(directory, NodeKeys.publicFile)) (fingerprint \(identity.fingerprint))")
        switch configuration.role {
        case .vessel: print("next: on the shore, fleetsync enroll --config FILE --vessel \(configuration.nodeID) --identity identity.pub")
        case .shore: print("next: copy identity.pub to every vessel and set [vessel] shore_identity = \"PATH\" there")
        }
    }
}

struct EnrollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll", abstract: "(shore) Register a vessel and its public identity so that its exchanges are accepted.")
    @OptionGroup var options: ConfigOption
    @Option(help: "The vessel's node id.") var vessel: String
    @Option(help: "The vessel's public identity file (identity.pub, written by fleetsync keygen on the vessel).") var identity: String

    func run() async throws {
        let configuration = try options.load()
        try requireRole(configuration, .shore, "enroll")
        guard Identifiers.isValidNodeID(vessel) else { throw ValidationError("--vessel \"\(vessel)\" is not a valid node id (\(Identifiers.nodeIDRule))") }
        let checked: PublicIdentity
        do {
            checked = try PublicIdentity.load(path: identity)
        } catch {
            throw CommandFailure(description: "\(error)")
        }
        guard checked.role == "vessel", checked.node == vessel else {
            throw CommandFailure(description: "\(identity) is the identity of \(checked.role) \(checked.node), not of vessel \(vessel): enroll each vessel with its own identity.pub")
        }
        try await withDatabase(configuration) { try await ShoreAuthority.enroll(vessel: vessel, identity: checked, text: checked.text, on: $0) }
        print("vessel \(vessel) enrolled (identity fingerprint \(checked.fingerprint)); tokens issued to it before now no longer work")
    }
}

struct RevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke", abstract: "(shore) Revoke a vessel: from its next request on, it is refused (enroll it again to readmit it).")
    @OptionGroup var options: ConfigOption
    @Option(help: "The vessel's node id.") var vessel: String

    func run() async throws {
        let configuration = try options.load()
        try requireRole(configuration, .shore, "revoke")
        let found = try await withDatabase(configuration) { try await ShoreAuthority.revoke(vessel: vessel, on: $0) }
        guard found else { throw CommandFailure(description: "no vessel \(vessel) is enrolled on this shore (fleetsync status lists them)") }
        print("vessel \(vessel) revoked: its next request is refused")
    }
}

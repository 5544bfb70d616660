import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A node's long-lived private keys: an ML-DSA-65 identity (signing) key and an X-Wing
/// (ML-KEM-768 + X25519) sealing key, each a file of mode 0600 in the keys directory.
public struct NodeKeys: @unchecked Sendable {
    public let identity: MLDSA65.PrivateKey
    public let sealing: XWingMLKEM768X25519.PrivateKey
    /// (shore, during a key rotation) Other sealing keys requests may be sealed to: the next
    /// keys' (announced) and the previous keys' (kept after a promotion).
    public var otherSealing: [XWingMLKEM768X25519.PrivateKey] = []
    /// (shore, during a key rotation) The announcement sent in token answers (``ShoreAnnouncement``).
    public var announcement: ShoreAnnouncement?

    public static let identityFile = "identity.key"
    public static let sealingFile = "sealing.key"
    /// The public identity file (node id, public keys, self-signature), safe to hand out.
    public static let publicFile = "identity.pub"

    static let identityHeader = "fleetsync private key: ML-DSA-65 identity (seed and public key hash), base64"
    static let sealingHeader = "fleetsync private key: X-Wing ML-KEM-768+X25519 sealing (seed and public key hash), base64"

    public init(identity: MLDSA65.PrivateKey, sealing: XWingMLKEM768X25519.PrivateKey) {
        self.identity = identity
        self.sealing = sealing
    }

    public static func generate() throws -> NodeKeys {
        NodeKeys(identity: try MLDSA65.PrivateKey(), sealing: try XWingMLKEM768X25519.PrivateKey.generate())
    }

    /// The node's public identity, signed with its own identity key.
    public func publicIdentity(node: String, role: String) throws -> PublicIdentity {
        try PublicIdentity.signed(node: node, role: role, signingKey: identity.publicKey.rawRepresentation,
                                  sealingKey: sealing.publicKey.rawRepresentation, by: identity)
    }

    /// Writes the two private key files (mode 0600) and the public identity file into
    /// `directory` (created with mode 0700 if missing), refusing to replace existing keys.
    public func write(to directory: String, node: String, role: String) throws {
        try Self.makeDirectory(directory)
        let identityPath = Self.path(directory, Self.identityFile), sealingPath = Self.path(directory, Self.sealingFile)
        for path in [identityPath, sealingPath] where FileManager.default.fileExists(atPath: path) {
            throw SecurityError("\(path) already exists: this node has keys. Keys are not replaced by keygen (enrolled peers trust them); remove the keys directory's files first if you really mean to start a new identity")
        }
        try Self.writePrivate(Self.identityHeader + "\n" + identity.integrityCheckedRepresentation.base64EncodedString() + "\n", to: identityPath)
        try Self.writePrivate(Self.sealingHeader + "\n" + sealing.integrityCheckedRepresentation.base64EncodedString() + "\n", to: sealingPath)
        let text = try publicIdentity(node: node, role: role).text
        do {
            try text.write(toFile: Self.path(directory, Self.publicFile), atomically: true, encoding: .utf8)
        } catch {
            throw SecurityError("cannot write the public identity file \(Self.path(directory, Self.publicFile)): \(error)")
        }
    }

    /// Reads the private keys from `directory`. A key file that others can read (any group or
    /// other permission bit) is refused: the node does not start with it.
    public static func load(directory: String) throws -> NodeKeys {
        let identityData = try readPrivate(path(directory, identityFile), header: identityHeader)
        let sealingData = try readPrivate(path(directory, sealingFile), header: sealingHeader)
        do {
            return NodeKeys(identity: try MLDSA65.PrivateKey(integrityCheckedRepresentation: identityData),
                            sealing: try XWingMLKEM768X25519.PrivateKey(integrityCheckedRepresentation: sealingData))
        } catch {
            throw SecurityError("the private keys in \(directory) are damaged (\(error)); restore them from a backup or run fleetsync keygen for a new identity and enroll it again")
        }
    }

    /// The shore's keys with what a rotation adds (docs/SECURITY.md, *Key rotation*): a promotion
    /// cut off by a crash is finished first; next keys are announced and opened with; the previous
    /// sealing key is still opened with and the endorsement of the current keys announced.
    public static func loadShore(directory: String) throws -> NodeKeys {
        let files = KeyDirectory(directory)
        try files.completeDecidedPromotion(role: .shore)
        var keys = try load(directory: directory)
        let current = try PublicIdentity.load(path: path(directory, publicFile))
        let state = files.observe()
        if state.previousKept {
            keys.otherSealing.append(try NodeKeys.loadSealing(path(files.previous, sealingFile)))
            let endorsement = try files.readEndorsement(files.previous)
            let previous = try PublicIdentity.load(path: path(files.previous, publicFile))
            guard KeyEndorsement.verify(endorsement, new: current, oldSigningKey: previous.signingKey, oldSealingKey: previous.sealingKey) else {
                throw SecurityError("\(files.previous)/endorsement does not endorse the current identity with the previous key: restore the keys directory from a backup")
            }
            keys.announcement = ShoreAnnouncement(identity: current, endorsement: endorsement)
        }
        if state.nextComplete {
            let next = try files.loadNext()
            guard KeyEndorsement.verify(next.endorsement, new: next.identity, oldSigningKey: current.signingKey, oldSealingKey: current.sealingKey) else {
                throw SecurityError("\(files.next)/endorsement does not endorse the next identity with the current key: remove \(files.next) and run fleetsync rotate-keys again")
            }
            keys.otherSealing.append(next.keys.sealing)
            keys.announcement = ShoreAnnouncement(identity: next.identity, endorsement: next.endorsement)
        }
        return keys
    }

    static func loadSealing(_ file: String) throws -> XWingMLKEM768X25519.PrivateKey {
        do {
            return try XWingMLKEM768X25519.PrivateKey(integrityCheckedRepresentation: try readPrivate(file, header: sealingHeader))
        } catch let error as SecurityError {
            throw error
        } catch {
            throw SecurityError("the private key \(file) is damaged (\(error))")
        }
    }

    public static func path(_ directory: String, _ file: String) -> String {
        directory.hasSuffix("/") ? directory + file : directory + "/" + file
    }

    /// Refuses a private key file whose mode lets its group or others read or write it.
    public static func checkMode(_ path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw SecurityError("cannot read private key file \(path): no such file. Run fleetsync keygen --config FILE first ([keys] directory)")
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw SecurityError("private key file \(path) has mode \(String(mode, radix: 8, uppercase: false).leftPadded(4)): others can read it, so this node refuses to start. Fix: chmod 600 \(path) (and consider the key exposed: make new keys with keygen in a new directory and enroll or pin them again)")
        }
    }

    static func makeDirectory(_ directory: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw SecurityError("[keys] directory \(directory) is not a directory") }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw SecurityError("cannot create [keys] directory \(directory): \(error)")
        }
    }

    static func writePrivate(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw SecurityError("cannot create private key file \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        _ = fchmod(fd, 0o600)
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            throw SecurityError("cannot write private key file \(path): \(String(cString: strerror(errno)))")
        }
    }

    static func readPrivate(_ path: String, header: String) throws -> Data {
        try checkMode(path)
        guard let data = FileManager.default.contents(atPath: path), data.count <= 4_096, let text = String(data: data, encoding: .utf8) else {
            throw SecurityError("cannot read private key file \(path)")
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard lines.count == 2, lines[0] == header, let key = Data(base64Encoded: String(lines[1])) else {
            throw SecurityError("\(path) is not a FleetSync private key file (expected the line \"\(header)\" and one base64 line)")
        }
        return key
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

import Crypto
import Foundation

/// A node's public identity file: node id, role, ML-DSA-65 public key, X-Wing public key, and a
/// signature of all four by the identity key itself (self-signature: proves the file was made by
/// the holder of the private key and was not altered; trust comes from how the file travelled,
/// enrollment on the shore or pinning on the vessel).
public struct PublicIdentity: Sendable, Equatable {
    public var node: String
    public var role: String
    public var signingKey: Data
    public var sealingKey: Data
    public var signature: Data

    static let format = "fleetsync-identity 1"
    static let context = Data("fleetsync identity".utf8)

    /// The bytes the self-signature covers.
    var signedBytes: Data {
        Data("\(Self.format)\nnode \(node)\nrole \(role)\nsigning ML-DSA-65 \(signingKey.base64EncodedString())\nsealing X-Wing \(sealingKey.base64EncodedString())\n".utf8)
    }

    static func signed(node: String, role: String, signingKey: Data, sealingKey: Data, by key: MLDSA65.PrivateKey) throws -> PublicIdentity {
        var identity = PublicIdentity(node: node, role: role, signingKey: signingKey, sealingKey: sealingKey, signature: Data())
        identity.signature = try key.signature(for: identity.signedBytes, context: Self.context)
        return identity
    }

    /// The file's text.
    public var text: String {
        "# FleetSync public identity of \(role) \(node). Not secret: the shore enrolls a vessel's (fleetsync enroll\n"
            + "# --identity FILE); a vessel pins its shore's ([vessel] shore_identity = \"FILE\").\n"
            + String(decoding: signedBytes, as: UTF8.self)
            + "signature ML-DSA-65 \(signature.base64EncodedString())\n"
    }

    public var signingPublicKey: MLDSA65.PublicKey {
        get throws { try MLDSA65.PublicKey(rawRepresentation: signingKey) }
    }

    public var sealingPublicKey: XWingMLKEM768X25519.PublicKey {
        get throws { try XWingMLKEM768X25519.PublicKey(rawRepresentation: sealingKey) }
    }

    /// Short fingerprint of the keys, for logs and messages.
    public var fingerprint: String {
        SHA256.hash(data: signingKey + sealingKey).prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    /// Parses an identity file and checks its self-signature; `source` names it in errors.
    public static func parse(_ text: String, source: String) throws -> PublicIdentity {
        func fail(_ why: String) -> SecurityError {
            SecurityError("\(source) is not a valid FleetSync public identity file: \(why). Fix: use the identity.pub that fleetsync keygen wrote, unchanged")
        }
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map(String.init)
        guard lines.count == 6, lines[0] == format else { throw fail("expected the line \"\(format)\" and five more") }
        func value(_ line: String, _ prefix: String) throws -> String {
            guard line.hasPrefix(prefix + " ") else { throw fail("expected a line starting with \"\(prefix)\"") }
            return String(line.dropFirst(prefix.count + 1))
        }
        guard let signing = Data(base64Encoded: try value(lines[3], "signing ML-DSA-65")),
              let sealing = Data(base64Encoded: try value(lines[4], "sealing X-Wing")),
              let signature = Data(base64Encoded: try value(lines[5], "signature ML-DSA-65")) else { throw fail("a key or the signature is not base64") }
        let identity = PublicIdentity(node: try value(lines[1], "node"), role: try value(lines[2], "role"), signingKey: signing, sealingKey: sealing, signature: signature)
        guard identity.role == "shore" || identity.role == "vessel" else { throw fail("role \"\(identity.role)\" is neither shore nor vessel") }
        let key: MLDSA65.PublicKey
        do {
            key = try identity.signingPublicKey
            _ = try identity.sealingPublicKey
        } catch {
            throw fail("a public key has the wrong size or form")
        }
        guard key.isValidSignature(signature, for: identity.signedBytes, context: Self.context) else {
            throw fail("its self-signature does not verify (the file was altered or damaged)")
        }
        return identity
    }

    /// Reads and checks an identity file.
    public static func load(path: String) throws -> PublicIdentity {
        guard let data = FileManager.default.contents(atPath: path), data.count <= 65_536, let text = String(data: data, encoding: .utf8) else {
            throw SecurityError("cannot read public identity file \(path) (at most 64 KiB of text)")
        }
        return try parse(text, source: path)
    }
}
